"""Plain PyTorch version of the reference curation algorithm (Vo et al. 2024).

Mirrors the published recipe (facebookresearch/ssl-data-curation) in behaviour, written from
its code (``src/kmeans_gpu.py``, ``src/hierarchical_kmeans_gpu.py``): greedy k-means++ seeding
(``2 + ln k`` candidates per centre) on all points, 50 Lloyd iterations per k-means with
float64 accumulation of the centroid sums, and at every level ``R`` resampling rounds that
each run a *fresh* k-means (new k-means++ seeding) on the points closest to every centroid and
reassign all points. Used only by the benchmark and by a quality test; production code uses
:mod:`ssl_core.curation.hkmeans`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ssl_core.curation.hkmeans import HKMeansResult, closest_per_cluster

__all__ = ["ref_kmeans", "ref_hierarchical_kmeans", "ref_assign"]


def ref_assign(
    x: torch.Tensor, c: torch.Tensor, chunk: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid and squared distance for every row, in chunks."""
    c_sq = (c * c).sum(1)
    labels = torch.empty(len(x), dtype=torch.long)
    dist = torch.empty(len(x), dtype=x.dtype)
    for s in range(0, len(x), chunk):
        xb = x[s : s + chunk]
        d = (xb * xb).sum(1, keepdim=True) - 2 * (xb @ c.T) + c_sq[None]
        dmin, lab = d.min(1)
        labels[s : s + chunk] = lab
        dist[s : s + chunk] = dmin.clamp_min(0)
    return labels, dist


def _kpp(
    x: torch.Tensor, k: int, g: torch.Generator, n_local_trials: int | None = None
) -> torch.Tensor:
    """Greedy k-means++ as upstream runs it (``src/kmeans_gpu.py``, after scikit-learn).

    For every centre after the first, ``n_local_trials`` candidates (default ``2 + ln k``) are
    drawn by D² sampling and the one that lowers the potential (sum of D²) the most is kept:
    one ``(trials x N)`` distance pass per centre. ``n_local_trials=1`` is plain k-means++.
    """
    n = len(x)
    trials = n_local_trials if n_local_trials is not None else 2 + int(np.log(k))
    idx = torch.empty(k, dtype=torch.long)
    idx[0] = torch.randint(n, (1,), generator=g)
    x_sq = (x * x).sum(1)

    def d2_to(rows: torch.Tensor) -> torch.Tensor:
        return (x_sq[None] - 2 * (x[rows] @ x.T) + x_sq[rows, None]).clamp_min(0).double()

    d2 = d2_to(idx[:1])[0]
    pot = d2.sum()
    for i in range(1, k):
        if pot <= 0:  # every point coincides with a centre
            idx[i] = torch.randint(n, (1,), generator=g)
            continue
        u = torch.rand(trials, generator=g, dtype=torch.float64) * pot
        cand = torch.searchsorted(torch.cumsum(d2, 0), u).clamp_max(n - 1)
        d_cand = torch.minimum(d2[None], d2_to(cand))
        pots = d_cand.sum(1)
        best = int(torch.argmin(pots))
        idx[i], d2, pot = cand[best], d_cand[best], pots[best]
    return idx


def ref_kmeans(
    x: np.ndarray | torch.Tensor, k: int, n_iter: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means++ + Lloyd; returns ``(centroids, labels, sq_dist)`` as numpy arrays."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    n, d = xt.shape
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, {n}]")
    g = torch.Generator().manual_seed(int(seed))
    c = xt[_kpp(xt, k, g)].clone()
    for _ in range(n_iter):
        labels, _ = ref_assign(xt, c)
        sums = torch.zeros(k, d, dtype=torch.float64)
        sums.index_add_(0, labels, xt.double())
        counts = torch.bincount(labels, minlength=k).double()
        nonempty = counts > 0
        c_new = c.double().clone()
        c_new[nonempty] = sums[nonempty] / counts[nonempty, None]
        c = c_new.float()
    labels, dist = ref_assign(xt, c)
    return c.numpy(), labels.numpy().astype(np.int64), dist.numpy()


def ref_hierarchical_kmeans(
    x: np.ndarray,
    levels: Sequence[int],
    n_iter: int = 50,
    n_resampling_steps: int | Sequence[int] = 10,
    sample_size_ratio: float = 0.5,
    seed: int = 0,
) -> HKMeansResult:
    """Reference hierarchical k-means with resampling (same result type as the fast one)."""
    levels = tuple(int(k) for k in levels)
    steps = (
        [int(n_resampling_steps)] * len(levels)
        if isinstance(n_resampling_steps, int)
        else [int(s) for s in n_resampling_steps]
    )
    res = HKMeansResult(levels, [], [], [])
    cur = np.asarray(x, dtype=np.float32)
    s_seed = seed * 1_000_003
    for lvl, k in enumerate(levels):
        s_seed += 1
        c, lab, dist = ref_kmeans(cur, k, n_iter, seed=s_seed)
        sample_size = max(1, round(sample_size_ratio * len(cur) / k))
        if sample_size > 1:
            for _ in range(steps[lvl]):
                sel = closest_per_cluster(lab, dist, sample_size)
                s_seed += 1
                c, _, _ = ref_kmeans(cur[sel], k, n_iter, seed=s_seed)
                lt, dt = ref_assign(torch.from_numpy(cur), torch.from_numpy(c))
                lab, dist = lt.numpy().astype(np.int64), dt.numpy()
        res.centroids.append(c)
        res.assignments.append(lab)
        res.distances.append(dist)
        cur = c
    return res
