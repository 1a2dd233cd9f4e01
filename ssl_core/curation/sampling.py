"""Balanced hierarchical sampling (Vo et al. 2024).

From the top level down, a cluster's quota is split among its children as evenly as their
sizes allow: with ``sizes`` = number of *points* under each child, find the largest integer cap
with ``sum(min(sizes, cap)) <= quota`` (:func:`find_cap`), give every child ``min(size, cap)``
and hand the remainder out one point at a time to randomly chosen children larger than the
cap. Totals are therefore exact, small children are taken whole and no child gets more than
``cap + 1``. At the bottom (level-0 clusters) the quota is filled with random members or with
the members closest to the centroid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ssl_core.curation.hkmeans import HKMeansResult

__all__ = ["find_cap", "allocate", "balanced_sample"]


def find_cap(sizes: np.ndarray, target: int) -> int:
    """Largest integer ``cap`` with ``sum(min(sizes, cap)) <= target`` (binary search).

    If everything fits (``sum(sizes) <= target``) returns ``max(sizes)``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    if sizes.size == 0:
        return 0
    if sizes.min() < 0:
        raise ValueError("sizes must be non-negative")
    hi = int(sizes.max())
    if int(sizes.sum()) <= target:
        return hi
    lo = 0  # invariant: f(lo) <= target < f(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if int(np.minimum(sizes, mid).sum()) <= target:
            lo = mid
        else:
            hi = mid
    return lo


def allocate(sizes: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``target`` among clusters of the given sizes: capped, exact, ``<= sizes``.

    Raises ``ValueError`` if ``target > sum(sizes)``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if target > total:
        raise ValueError(f"cannot take {target} points from clusters holding {total}")
    cap = find_cap(sizes, target)
    out = np.minimum(sizes, cap)
    rem = target - int(out.sum())
    if rem > 0:
        # f(cap + 1) > target, so at least ``rem`` clusters are larger than cap
        cand = np.flatnonzero(sizes > cap)
        out[rng.choice(cand, size=rem, replace=False)] += 1
    return out


def _pick_in_clusters(labels: np.ndarray, quota: np.ndarray, key: np.ndarray) -> np.ndarray:
    """For each cluster c take the ``quota[c]`` members with the smallest ``key``."""
    order = np.lexsort((key, labels))
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    rank = np.arange(len(lab)) - np.repeat(starts, np.diff(np.r_[starts, len(lab)]))
    return np.sort(order[rank < quota[lab]])


def balanced_sample(
    clusters: HKMeansResult | Sequence[np.ndarray],
    target_size: int,
    strategy: Literal["random", "closest"] = "random",
    seed: int = 0,
    distances: np.ndarray | None = None,
) -> np.ndarray:
    """Balanced hierarchical sample of exactly ``target_size`` point indices.

    Args:
        clusters: an :class:`HKMeansResult`, or the per-level assignments (``[0]`` maps
            points to level-0 clusters, ``[l]`` maps level-(l-1) clusters to level-l clusters).
        target_size: number of points to select, ``0 <= target_size <= N``.
        strategy: ``"random"`` members, or the members ``"closest"`` to their level-0
            centroid (needs ``distances``, taken from the result when not given).
        seed: seed of the random choices (remainder distribution and random picks).
        distances: (N,) distance of each point to its level-0 centroid.

    Returns:
        Sorted int64 indices of the selected points (no repeats).
    """
    if isinstance(clusters, HKMeansResult):
        assignments = clusters.assignments
        if distances is None:
            distances = clusters.distances[0]
    else:
        assignments = list(clusters)
    if not assignments:
        raise ValueError("need at least one level of assignments")
    if strategy not in ("random", "closest"):
        raise ValueError(f"strategy must be 'random' or 'closest', got {strategy!r}")
    a0 = np.asarray(assignments[0], dtype=np.int64)
    n = len(a0)
    if not 0 <= target_size <= n:
        raise ValueError(f"target_size={target_size} must be between 0 and the {n} points")
    rng = np.random.default_rng(seed)

    # flat sizes (points under each cluster) per level
    n_clusters = [int(a0.max()) + 1 if n else 0]
    for a in assignments[1:]:
        n_clusters.append(int(np.max(a)) + 1 if len(a) else 0)
    flat = [np.bincount(a0, minlength=n_clusters[0])]
    for lvl in range(1, len(assignments)):
        a = np.asarray(assignments[lvl], dtype=np.int64)
        flat.append(
            np.bincount(a, weights=flat[lvl - 1], minlength=n_clusters[lvl]).astype(np.int64)
        )

    # top level: equal share per top cluster
    quota = allocate(flat[-1], target_size, rng)
    # walk down: split each parent's quota among its children
    for lvl in range(len(assignments) - 1, 0, -1):
        parent_of = np.asarray(assignments[lvl], dtype=np.int64)
        child_quota = np.zeros(n_clusters[lvl - 1], dtype=np.int64)
        order = np.argsort(parent_of, kind="stable")
        bounds = np.searchsorted(parent_of[order], np.arange(n_clusters[lvl] + 1))
        for p in np.flatnonzero(quota):
            kids = order[bounds[p] : bounds[p + 1]]
            child_quota[kids] = allocate(flat[lvl - 1][kids], int(quota[p]), rng)
        quota = child_quota

    if strategy == "closest":
        if distances is None:
            raise ValueError("strategy='closest' needs distances to the level-0 centroids")
        key = np.asarray(distances, dtype=np.float64)
        if key.shape != (n,):
            raise ValueError(f"distances must have shape ({n},), got {key.shape}")
    else:
        key = rng.random(n)
    out = _pick_in_clusters(a0, quota, key)
    assert len(out) == target_size
    return out
