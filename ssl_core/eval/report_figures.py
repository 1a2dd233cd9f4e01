"""The report's model figures: which to draw for the models measured, and where they go.

Per backbone model: ``attention_<model>.png`` (CLS attention of the last block, per head and
averaged, with the PCA of the patch features as RGB; XCiT: PCA only) on the same
``FIGURE_IMAGES`` fixed images; per register twin ``register_twins_<with>_vs_<without>.png``;
for all models ``token_norms.png``, and with labels ``accuracy_vs_params.png`` and
``knn_vs_k.png``. Captions for report.md / report.html come back with the file names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ssl_core.curation.embed import BackboneEmbedder
from ssl_core.eval.attention_maps import cls_attention_maps, patch_pca_rgb
from ssl_core.eval.model_metrics import accuracy_vs_params_rows
from ssl_core.eval.register_twins import register_twins
from ssl_core.eval.report_plots import (
    plot_accuracy_vs_params,
    plot_attention_grid,
    plot_knn_vs_k,
    plot_norm_histograms,
    plot_register_twins,
)

FIGURE_IMAGES = 6  # fixed eval images shown per model
XCIT_NOTE = "XCiT: no token-token CLS attention over patches (cross-covariance attention), PCA only"


def _pictures(emb: BackboneEmbedder, images: torch.Tensor) -> tuple[np.ndarray | None, np.ndarray]:
    attn = cls_attention_maps(emb.model, images)
    pca = patch_pca_rgb(emb.model, images)
    return (None if attn is None else attn.numpy()), pca.numpy()


def model_pictures(
    models: Mapping[str, object], images: torch.Tensor, out: Path
) -> tuple[dict[str, str], dict[str, tuple]]:
    """Attention + PCA grid of every backbone in ``models`` on ``images`` ((B, 3, S, S) in
    [0, 1]). Returns (file name -> caption, model -> (attn, pca) arrays for the twins)."""
    captions, arrays = {}, {}
    imgs = images.numpy()
    for name, emb in models.items():
        if not isinstance(emb, BackboneEmbedder):
            continue
        attn, pca = _pictures(emb, images)
        arrays[name] = (attn, pca)
        note = "" if attn is not None else f" ({XCIT_NOTE})"
        file = f"attention_{name}.png"
        plot_attention_grid(imgs, attn, pca, f"{name}{note}", out / file)
        what = "last-block CLS attention over patches (head mean, then per head; registers "
        what += "left out) and the first 3 PCA components of the patch features as RGB"
        captions[file] = f"{name}: {what if attn is not None else 'patch-feature PCA as RGB'}"
        captions[file] += f" on {len(imgs)} fixed images.{note}"
    return captions, arrays


def twin_pictures(
    metrics: dict, arrays: Mapping[str, tuple], images: torch.Tensor, out: Path
) -> dict[str, str]:
    """One side-by-side figure per register twin pair (``metrics["register_twins"]``, else
    paired from ``metrics["models"]``)."""
    captions = {}
    pairs = (metrics.get("register_twins") or {}).get("pairs")
    if pairs is None:
        pairs = register_twins(metrics.get("models") or {})
    for with_r, without in pairs:
        if with_r not in arrays or without not in arrays:
            continue
        file = f"register_twins_{with_r}_vs_{without}.png"
        plot_register_twins(
            images.numpy(),
            {f"{with_r} (registers)": arrays[with_r], f"{without} (none)": arrays[without]},
            out / file,
        )
        captions[file] = (
            f"Register twins: {with_r} (with registers) next to {without} (without): CLS "
            "attention (head mean) and patch PCA on the same images."
        )
    return captions


def summary_plots(metrics: dict, out: Path) -> dict[str, str]:
    """Token-norm histograms of every backbone; accuracy vs parameters and kNN vs k (labels)."""
    captions = {}
    hists = {
        m: h["tokens"]
        for m, h in (metrics.get("feature_health") or {}).items()
        if (h.get("tokens") or {}).get("hist")
    }
    if hists:
        plot_norm_histograms(hists, out / "token_norms.png")
        captions["token_norms.png"] = (
            "Patch-token norms before the last LayerNorm (log counts); dashed: 4x the median, "
            "above which a token counts as a high-norm artifact."
        )
    rows = accuracy_vs_params_rows(metrics)
    if rows:
        plot_accuracy_vs_params(rows, out / "accuracy_vs_params.png")
        captions["accuracy_vs_params.png"] = (
            f"Top-1 vs parameters: kNN (k={rows[0]['knn_k']}) and linear probe on CLS."
        )
    if metrics.get("knn"):
        plot_knn_vs_k(metrics["knn"], out / "knn_vs_k.png")
        captions["knn_vs_k.png"] = "kNN top-1 against the number of neighbours k."
    return captions


def report_figures(
    metrics: dict, models: Mapping[str, object], images: torch.Tensor, out: Path
) -> dict[str, str]:
    """Draw every model figure into ``out``; returns file name -> caption, in page order."""
    out = Path(out)
    captions = summary_plots(metrics, out)
    grids, arrays = model_pictures(models, images, out)
    captions.update(twin_pictures(metrics, arrays, images, out))
    captions.update(grids)
    return captions
