"""Is the DINO prototype head informative, or has it gone uniform?

A DINO head ends in ``K`` unit prototypes ``W`` (rows) scored against the l2-normalised bottleneck
``z``: ``s = W z`` are cosines. The teacher's targets carry information only through how these
scores differ *between images*: Sinkhorn-Knopp / softmax centring remove what all images share.
A head can go "uniform" while the backbone features stay diverse: ``z`` drifts into directions
that (almost) no prototype uses, every score shrinks towards 0 and the targets towards
``1/K`` (DINO loss ~ log K). These numbers tell the two apart on a batch of real images:

- ``weak_dir_energy``: share of ``||z||^2`` in the ``n_weak`` directions where the prototype
  matrix is weakest (smallest singular values). ~``n_weak / d`` for a healthy head, near 1 when
  ``z`` hides in the prototypes' null space.
- ``cos_z`` / ``cos_cls``: mean cosine between different images' bottlenecks / backbone CLS
  tokens (1 = all the same).
- ``logit_std_across_images``: std over images of each prototype's score, averaged over
  prototypes: the signal that survives centring.
- ``entropy_ratio``: mean per-image entropy of ``softmax(s / T)`` over log K, per temperature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ssl_core.data.normalize import normalize
from ssl_core.train.step import softmax_entropies

__all__ = ["head_diagnostics", "prototype_scores"]


def _mean_offdiag_cos(a: torch.Tensor) -> float:
    a = F.normalize(a.float(), dim=-1)
    c = a @ a.T
    n = len(a)
    return float((c.sum() - c.diagonal().sum()) / max(n * (n - 1), 1))


def prototype_scores(head: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(z, W, s)``: normalised bottleneck (n, d), unit prototypes (K, d), cosines (n, K)."""
    z = F.normalize(head.mlp(tokens).float(), dim=-1)
    w = F.normalize(head.last_layer.weight.float(), dim=1)  # weight-norm applied: g * v / |v|
    return z, w, z @ w.T


@torch.no_grad()
def head_diagnostics(
    net: torch.nn.Module,
    images: torch.Tensor,
    temperatures: Sequence[float] = (0.04, 0.07, 0.1),
    n_weak: int = 2,
) -> dict[str, float | dict[str, float]]:
    """Diagnostics of ``net.dino_head`` on ``images`` (B, C, H, W) in [0, 1], B >= 2.

    ``net`` is an :class:`~ssl_core.train.ssl_model.SSLNet` (backbone + ``dino_head``). Returns
    the numbers described in the module docstring, plus the same ``weak_dir_energy`` for
    patch tokens (``patch_weak_dir_energy``), which iBOT scores with the shared head.
    """
    if images.shape[0] < 2:
        raise ValueError("head diagnostics compare images with each other: pass at least 2")
    out = net.backbone.forward_features(normalize(images))
    cls = out["x_norm_clstoken"]
    head = net.dino_head
    z, w, s = prototype_scores(head, cls)
    _, sv, vh = torch.linalg.svd(w, full_matrices=False)
    weak = vh[-n_weak:]  # right singular vectors of the smallest singular values
    energy = float(((z @ weak.T) ** 2).sum(1).mean())
    patches = out["x_norm_patchtokens"].reshape(-1, cls.shape[-1])
    zp, _, _ = prototype_scores(head, patches)
    k = w.shape[0]
    ent = {f"{t:g}": softmax_entropies(s, t)[0] / math.log(k) for t in temperatures}
    return {
        "n_images": int(images.shape[0]),
        "n_prototypes": int(k),
        "bottleneck_dim": int(w.shape[1]),
        "weak_dir_energy": energy,
        "weak_dir_energy_random": n_weak / w.shape[1],
        "patch_weak_dir_energy": float(((zp @ weak.T) ** 2).sum(1).mean()),
        "prototype_singular_values_min": [float(v) for v in sv[-n_weak:]],
        "cos_z": _mean_offdiag_cos(z),
        "cos_cls": _mean_offdiag_cos(cls),
        "logit_std_across_images": float(s.std(0).mean()),
        "entropy_ratio": ent,
    }
