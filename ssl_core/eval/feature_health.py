"""Label-free evidence about a trained backbone (for image pools without labels).

- :func:`effective_rank`: RankMe (Garrido et al., "RankMe: Assessing the downstream performance
  of pretrained self-supervised representations by their rank", ICML 2023). ~1 for a collapsed
  embedding, up to D for a full-rank one.
- :func:`uniformity`: Wang & Isola, "Understanding contrastive representation learning through
  alignment and uniformity on the hypersphere", ICML 2020. 0 when collapsed, strongly negative
  when spread over the sphere.
- :func:`token_norm_stats`: high-norm "artifact" patch tokens of Darcet et al., "Vision
  Transformers Need Registers", ICLR 2024.
- :func:`cluster_balance`: how evenly images fall into clusters (entropy, Gini, largest share).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ssl_core.data.normalize import normalize

__all__ = [
    "OUTLIER_FACTOR",
    "cluster_balance",
    "effective_rank",
    "token_norm_stats",
    "uniformity",
]

# A patch token is an artifact when its pre-norm L2 norm exceeds this multiple of the median
# patch norm. Darcet et al. use an absolute threshold (norm > 150), which is specific to ViT-L;
# a threshold relative to the median works at any width.
OUTLIER_FACTOR = 4.0

_RANKME_EPS = 1e-7  # Garrido et al. 2023, eq. 1
_HIST_BINS = 30


def effective_rank(features: torch.Tensor) -> float:
    """RankMe effective rank (Garrido et al. 2023) of an (N, D) feature matrix.

    ``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / ||sigma||_1 + 1e-7`` over the singular
    values ``sigma`` of the features as given (no centring). ~1 under full collapse, close to
    ``min(N, D)`` for isotropic features.
    """
    if features.ndim != 2 or min(features.shape) == 0:
        raise ValueError(f"features must be a non-empty (N, D) matrix, got {tuple(features.shape)}")
    s = torch.linalg.svdvals(features.detach().double())
    total = s.sum()
    if total <= 0:
        raise ValueError("features are all zero: effective rank undefined")
    p = s / total + _RANKME_EPS
    return float(torch.exp(-(p * torch.log(p)).sum()))


def uniformity(features: torch.Tensor, t: float = 2.0) -> float:
    """Uniformity loss (Wang & Isola 2020) of (N, D) features, N >= 2.

    ``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` on L2-normalised rows. 0 (its maximum) when all
    rows coincide; strongly negative when they spread over the sphere. Memory is O(N^2):
    subsample large pools first.
    """
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need an (N, D) matrix with N >= 2, got {tuple(features.shape)}")
    x = F.normalize(features.detach().double(), dim=1)
    sq = torch.pdist(x, p=2).pow(2)  # (N*(N-1)/2,) distinct pairs
    return float(sq.mul(-t).exp().mean().log())


@torch.no_grad()
def _prenorm_norms(
    backbone: torch.nn.Module, images: torch.Tensor, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """L2 norms of pre-norm patch tokens and register tokens over all images (flattened)."""
    r = int(backbone.num_register_tokens)
    device = next(backbone.parameters()).device
    patch, reg = [], []
    for start in range(0, images.shape[0], batch_size):
        x = normalize(images[start : start + batch_size].to(device))
        tokens = backbone.forward_features(x)["x_prenorm"].float()  # (B, 1+R+N, D)
        patch.append(tokens[:, 1 + r :].norm(dim=-1).flatten().cpu())
        reg.append(tokens[:, 1 : 1 + r].norm(dim=-1).flatten().cpu())
    return torch.cat(patch).numpy(), torch.cat(reg).numpy()


def token_norm_stats(
    backbone: torch.nn.Module, images: torch.Tensor, batch_size: int = 64
) -> dict[str, Any]:
    """High-norm artifact tokens (Darcet et al. 2024, "Vision Transformers Need Registers").

    Args:
        backbone: A :class:`~ssl_core.models.vit.VisionTransformer` (``forward_features`` and
            ``num_register_tokens``). Run in eval mode; its training flag is restored after.
        images: (B, C, H, W) floats in [0, 1] (ImageNet-normalised here), sides multiples of
            the patch size.
        batch_size: Images per forward.

    Returns:
        ``patch_norm_median``, ``patch_norm_p99``, ``patch_norm_max``, ``outlier_share`` (share
        of patch tokens with norm > ``OUTLIER_FACTOR`` x median), ``register_norm_median``
        (None without registers), ``num_register_tokens``, ``n_tokens`` (patch tokens seen) and
        ``hist`` = ``{"edges": [...], "counts": [...]}`` (30-bin histogram of patch norms).
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (B, C, H, W) batch, got {images.shape}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = backbone.training
    backbone.eval()
    try:
        patch, reg = _prenorm_norms(backbone, images, batch_size)
    finally:
        backbone.train(was_training)
    median = float(np.median(patch))
    counts, edges = np.histogram(patch, bins=_HIST_BINS)
    return {
        "patch_norm_median": median,
        "patch_norm_p99": float(np.percentile(patch, 99)),
        "patch_norm_max": float(patch.max()),
        "outlier_share": float(np.mean(patch > OUTLIER_FACTOR * median)),
        "register_norm_median": float(np.median(reg)) if reg.size else None,
        "num_register_tokens": int(backbone.num_register_tokens),
        "n_tokens": int(patch.size),
        "hist": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def cluster_balance(counts: Any) -> dict[str, float | int]:
    """Balance of a 1-D array of per-cluster counts (empty clusters included).

    Returns ``clusters``, ``nonempty``, ``entropy_normalised`` (Shannon entropy of the cluster
    shares / log(clusters): 1 = uniform, 0 for a single cluster), ``gini`` (Gini coefficient
    over clusters, 0 = equal, (K-1)/K when one cluster holds everything) and ``largest_share``.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D array, got shape {c.shape}")
    if (c < 0).any() or c.sum() <= 0:
        raise ValueError("counts must be non-negative with a positive total")
    k, total = c.size, c.sum()
    p = c[c > 0] / total
    entropy = float(-(p * np.log(p)).sum())
    ranks = np.arange(1, k + 1)
    gini = float(((2 * ranks - k - 1) * np.sort(c)).sum() / (k * total))
    return {
        "clusters": int(k),
        "nonempty": int((c > 0).sum()),
        "entropy_normalised": entropy / math.log(k) if k > 1 else 0.0,
        "gini": gini,
        "largest_share": float(c.max() / total),
    }
