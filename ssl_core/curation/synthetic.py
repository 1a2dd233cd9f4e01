"""Synthetic embeddings shaped like real ones, for curation tests and benchmarks.

An isotropic Gaussian mixture in 384-d is adversarial to k-means (all centres are equidistant
and a "hub" cluster swallows the small components). Real embedding pools look more like a
hierarchy: broad concepts (super-clusters) split into fine concepts (sub-clusters), with a
long-tailed (Zipf) number of images per fine concept. This module generates exactly that.
"""

from __future__ import annotations

import numpy as np

__all__ = ["zipf_sizes", "hierarchical_mixture"]


def zipf_sizes(n: int, n_components: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Split ``n`` points into ``n_components`` sizes proportional to ``1 / rank**exponent``.

    Every component gets at least one point; sizes sum to ``n``; ranks are shuffled so the
    big components land in random super-clusters.
    """
    if n < n_components:
        raise ValueError(f"need n >= n_components, got n={n}, n_components={n_components}")
    w = 1.0 / np.arange(1, n_components + 1, dtype=np.float64) ** exponent
    w /= w.sum()
    extra = n - n_components
    sizes = 1 + np.floor(w * extra).astype(np.int64)
    rest = n - int(sizes.sum())
    frac = w * extra - np.floor(w * extra)
    sizes[np.argsort(-frac, kind="stable")[:rest]] += 1
    return rng.permutation(sizes)


def hierarchical_mixture(
    n: int = 100_000,
    dim: int = 384,
    n_super: int = 50,
    n_sub: int = 20,
    zipf_exponent: float = 1.0,
    super_scale: float = 1.0,
    sub_scale: float = 0.5,
    noise: float = 0.35,
    normalise: bool = True,
    seed: int = 0,
    chunk: int = 200_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Hierarchy of ``n_super`` super-clusters x ``n_sub`` sub-clusters with Zipf sizes.

    Scales are norms of the offsets (per-dimension std ``scale / sqrt(dim)``): super-cluster
    centres ~ ``super_scale`` from the origin, sub-cluster centres ~ ``sub_scale`` from their
    super-centre, points ~ ``noise`` from their sub-centre. With the defaults the true
    components are separable but close enough that k-means must work for it.

    Returns:
        ``(x float32 (n, dim), component int64 (n,))`` with component id in
        ``[0, n_super * n_sub)``; ``component // n_sub`` is the super-cluster.
    """
    rng = np.random.default_rng(seed)
    n_comp = n_super * n_sub
    s = 1.0 / np.sqrt(dim)
    sup = rng.standard_normal((n_super, dim)) * (super_scale * s)
    sub = np.repeat(sup, n_sub, axis=0) + rng.standard_normal((n_comp, dim)) * (sub_scale * s)
    sizes = zipf_sizes(n, n_comp, zipf_exponent, rng)
    comp = rng.permutation(np.repeat(np.arange(n_comp, dtype=np.int64), sizes))
    x = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        xb = sub[comp[a:b]] + rng.standard_normal((b - a, dim)) * (noise * s)
        if normalise:
            xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        x[a:b] = xb
    return x, comp
