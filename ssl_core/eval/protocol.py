"""One model measured on the labelled eval set the way DINOv2 reports it.

kNN on L2-normalised CLS (temperature-weighted votes), retrieval (recall@1/5, mAP) of query
images in the bank, and linear probes trained on cached features of the bank (a validation
split of the bank picks the learning rate; accuracy is reported on the query side): on the CLS
token, and for ViTs on DINOv2's ``cls4_avgpool`` input (CLS of the last 4 blocks + average-pooled
patch tokens).
"""

from __future__ import annotations

from typing import Any

import torch

from ssl_core.curation.embed import BackboneEmbedder, Embedder
from ssl_core.data.eval_set import EvalSet
from ssl_core.eval.knn import knn_accuracy
from ssl_core.eval.linear_probe import dinov2_linear_features, fit_linear_probes, split_bank
from ssl_core.eval.probe import eval_features
from ssl_core.eval.retrieval import retrieval_metrics

PROBE_VAL_FRACTION = 0.2  # share of the kNN bank that picks the linear probe's lr


class LinearInputEmbedder:
    """DINOv2's ``cls4_avgpool`` features of a backbone, behind the :class:`Embedder` protocol."""

    channels = 3

    def __init__(self, emb: BackboneEmbedder) -> None:
        self.model, self.image_size, self.name = emb.model, emb.image_size, f"{emb.name}_lin"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return dinov2_linear_features(self.model, x)["cls4_avgpool"]


def _linear(xb, yb, xq, yq, n_classes: int, seed: int) -> dict[str, Any]:
    tr, va = split_bank(yb.numpy(), PROBE_VAL_FRACTION, seed)
    probe = fit_linear_probes(xb[tr], yb[tr], xb[va], yb[va], n_classes, seed=seed)
    return {"top1": probe.accuracy(xq, yq), "best_lr": probe.best_lr}


def measure(
    emb: Embedder,
    evset: EvalSet,
    ks: list[int],
    temperature: float,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """kNN (per k), retrieval and linear-probe accuracies of ``emb`` on ``evset``."""
    xb, yb, xq, yq = eval_features(emb, evset, batch_size, progress)
    knn = knn_accuracy(xb, yb, xq, yq, ks=ks, temperature=temperature)
    out: dict[str, Any] = {
        "knn": {str(k): round(v, 4) for k, v in knn.items()},
        "retrieval": retrieval_metrics(xq, yq, xb, yb),
        "linear": {"cls": _linear(xb, yb, xq, yq, evset.n_classes, seed)},
    }
    if isinstance(emb, BackboneEmbedder):
        lin = eval_features(LinearInputEmbedder(emb), evset, batch_size, progress)
        out["linear"]["cls4_avgpool"] = _linear(*lin, evset.n_classes, seed)
    return out
