"""Hierarchical k-means with resampling as a ``torch.distributed`` job (1e8-1e9 points).

The same algorithm as :func:`ssl_core.curation.hkmeans.hierarchical_kmeans` (Vo et al. 2024:
k-means per level, then ``R`` resampling rounds of "take the ``s`` members closest to their
centroid in every cluster, run a fresh k-means on them, reassign every point"), over level-0
points split by rows across the ranks of a process group: rank ``r`` of ``W`` holds the
contiguous slice ``[N r / W, N (r + 1) / W)`` and reads it chunk by chunk (float16 memmaps
become float32 one chunk at a time), so no rank ever holds the whole array.

Per k-means run (``_kmeans``):

* seeding: batched k-means++ (:func:`ssl_core.curation.kmeans.kmeans_plus_plus`) on a
  subsample of ``max(8 k, 20000)`` points picked by *global* position with the run's seeded
  RNG; the ranks assemble it with one all-reduce (each fills its own rows, zeros elsewhere);
* Lloyd: each rank assigns its rows (chunked float32 GEMM in torch), sums members per centroid
  in float64 and counts them; ``all_reduce(SUM)`` of sums, counts and objective; an empty
  cluster keeps its previous centroid; stop once an iteration lowers the objective by less
  than ``tol`` times its value.

Resampling (``closest_mask``) selects, for every cluster, exactly the ``s`` members with the
smallest key ``(squared distance, global position)`` over all ranks: a per-cluster bisection
on that 64-bit key, one all-reduce of ``k`` counts per step (63 steps), so ties are broken by
position and the set does not depend on how rows are split. Upper levels (on the level-0
centroids, small) run on every rank alike, without communication.

Equal across world sizes: sums are float64 and chunk boundaries are aligned to global row
positions, so a run on 2 ranks gives the assignments of a run on 1 rank and centroids equal to
float rounding. Differs from the faiss path (``hkmeans``): Lloyd uses every point (no
``max_points_per_centroid`` subsample), empty clusters are kept instead of split, no
``spherical``/``random``/``warm`` options and no level checkpoints.

Run: ``torchrun --nproc_per_node 2 -m ssl_core.launch.job clusters --params FILE`` (what the
clusters stage submits when ``launch.clusters`` asks for more than one rank); gloo on CPU,
NCCL on GPU (see :func:`ssl_core.curation.collectives.process_group_from_env`); with no
process group it runs on one rank.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ssl_core.curation import nearest as nn
from ssl_core.curation.collectives import Comm, shard_bounds
from ssl_core.curation.hkmeans import HKMeansResult, _per_level
from ssl_core.curation.kmeans import kmeans_plus_plus

__all__ = ["closest_mask", "distributed_hierarchical_kmeans"]

log = logging.getLogger(__name__)

#: elements of one (rows x centroids) distance block: bounds GEMM memory at large k
_BLOCK = 2**24
_KEY_MAX = 2**63 - 1


@dataclass(frozen=True)
class _Rows:
    """This rank's points of one k-means run: rows ``index`` of ``data``, in global order.

    ``start`` is the global position of ``index[0]`` among all ranks' points, ``total`` their
    number; ``data`` is the full (N, D) level array (a memmap costs nothing until read).
    """

    data: np.ndarray
    index: np.ndarray
    start: int
    total: int

    def read(self, lo: int, hi: int) -> np.ndarray:
        """float32 rows ``index[lo:hi]`` (a slice when contiguous: one read)."""
        idx = self.index[lo:hi]
        if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
            block = self.data[int(idx[0]) : int(idx[-1]) + 1]
        else:
            block = self.data[idx]
        return np.asarray(block, dtype=np.float32)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(local offset, float32 rows)`` in chunks whose bounds are multiples of ``size`` in
        global positions, so every world size cuts the same chunks (except at rank edges)."""
        lo = 0
        while lo < len(self.index):
            hi = min(len(self.index), (self.start + lo) // size * size + size - self.start)
            yield lo, self.read(lo, hi)
            lo = hi

    def subset(self, keep: np.ndarray, comm: Comm) -> _Rows:
        """The rows where ``keep`` (local bool mask), renumbered over all ranks."""
        counts = comm.all_gather(np.array([keep.sum()], dtype=np.int64))[:, 0]
        start = int(counts[: comm.rank].sum()) if comm.on else 0
        return _Rows(self.data, self.index[keep], start, int(counts.sum()))


def _nearest(xb: torch.Tensor, cs: nn.Centroids) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ssl_core.curation.nearest.nearest` with -0.0 made +0.0 (keys compare bits)."""
    lab, d2 = nn.nearest(xb, cs)
    return lab, d2.abs_()


def _chunk_rows(k: int, chunk_size: int) -> int:
    return max(64, min(chunk_size, _BLOCK // max(k, 1)))


def _assign(
    rows: _Rows, c: np.ndarray, device: torch.device, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels int64 and squared distances float32 of this rank's rows."""
    cs = nn.Centroids(c, device)
    lab = np.empty(len(rows.index), dtype=np.int64)
    dst = np.empty(len(rows.index), dtype=np.float32)
    for lo, xb in rows.chunks(_chunk_rows(len(c), chunk_size)):
        li, di = _nearest(torch.from_numpy(xb).to(device), cs)
        lab[lo : lo + len(xb)] = li.cpu().numpy()
        dst[lo : lo + len(xb)] = di.cpu().numpy()
    return lab, dst


def _lloyd(
    rows: _Rows,
    c0: np.ndarray,
    n_iter: int,
    tol: float,
    comm: Comm,
    device: torch.device,
    chunk_size: int,
) -> np.ndarray:
    """Lloyd iterations from ``c0`` over every rank's rows; float64 sums all-reduced."""
    k, d = c0.shape
    c = torch.from_numpy(c0.copy()).to(device)
    prev = math.inf
    for _ in range(n_iter):
        cs = nn.Centroids(c, device)
        sums = torch.zeros(k, d, dtype=torch.float64, device=device)
        counts = torch.zeros(k, dtype=torch.float64, device=device)
        obj = torch.zeros(1, dtype=torch.float64, device=device)
        for _, xb in rows.chunks(_chunk_rows(k, chunk_size)):
            xt = torch.from_numpy(xb).to(device)
            lab, dmin = _nearest(xt, cs)
            sums.index_add_(0, lab, xt.double())
            counts += torch.bincount(lab, minlength=k).double()
            obj += dmin.double().sum()
        # one all-reduce: [sums | counts | objective], float64 (counts exact below 2**53)
        flat = torch.cat([sums.flatten(), counts, obj]).cpu().numpy()
        flat = comm.sum(flat)
        sums = torch.from_numpy(flat[: k * d].reshape(k, d)).to(device)
        counts = torch.from_numpy(flat[k * d : k * d + k]).to(device)
        total = float(flat[-1])
        filled = counts > 0
        means = (sums / counts.clamp_min(1.0)[:, None]).float()
        c = torch.where(filled[:, None], means, c)  # empty: keep the previous centroid
        if tol > 0 and prev - total <= tol * abs(total):
            break
        prev = total
    return c.cpu().numpy()


def _seed_centroids(rows: _Rows, k: int, rng: np.random.Generator, kpp_sample: int | None,
                    comm: Comm) -> np.ndarray:  # fmt: skip
    """Batched k-means++ on a subsample picked by global position (as ``kmeans.py`` does)."""
    n = rows.total
    m = max(min(n, kpp_sample if kpp_sample is not None else max(8 * k, 20000)), k)
    sub = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    mine = np.flatnonzero((sub >= rows.start) & (sub < rows.start + len(rows.index)))
    d = rows.data.shape[1]
    xs = np.zeros((m, d), dtype=np.float32)  # own rows filled, zeros elsewhere: sum is exact
    local = sub[mine] - rows.start
    for lo in range(0, len(local), 65536):
        part = local[lo : lo + 65536]
        xs[mine[lo : lo + 65536]] = _Rows(rows.data, rows.index[part], 0, 0).read(0, len(part))
    xs = comm.sum(xs)
    batch = max(1, math.ceil(k / 256))
    return xs[kmeans_plus_plus(xs, k, rng, batch=batch)].copy()


def _kmeans(rows: _Rows, k: int, n_iter: int, seed: int, tol: float, kpp_sample: int | None,
            comm: Comm, device: torch.device, chunk_size: int) -> np.ndarray:  # fmt: skip
    """Centroids float32 (k, D) of k-means++-seeded Lloyd over every rank's rows."""
    if not 1 <= k <= rows.total:
        raise ValueError(f"k-means needs 1 <= k <= number of points, got k={k}, n={rows.total}")
    rng = np.random.default_rng(seed)
    c0 = _seed_centroids(rows, k, rng, kpp_sample, comm)
    return _lloyd(rows, c0, n_iter, tol, comm, device, chunk_size) if n_iter > 0 else c0


def closest_mask(labels: np.ndarray, dist2: np.ndarray, positions: np.ndarray, k: int,
                 per_cluster: int, comm: Comm) -> np.ndarray:  # fmt: skip
    """Local bool mask of the ``per_cluster`` members of every cluster closest to its centroid,
    over all ranks (all members of a smaller cluster).

    Exact: members are ordered by the key ``(distance, global position)`` (float32 bits in the
    high word, position in the low one; positions must be < 2**32), and each cluster's
    threshold key, the smallest ``T`` with ``#{key <= T} >= min(per_cluster, size)``, is found
    by bisection with one all-reduce of ``k`` counts per step. Equals
    :func:`ssl_core.curation.hkmeans.closest_per_cluster` on the concatenated data.
    """
    if positions.size and int(positions.max()) >= 2**32:
        raise ValueError("closest_mask: more than 2**32 points; split the data into parts")
    bits = np.abs(dist2.astype(np.float32)).view(np.int32).astype(np.int64)
    key = (bits << 32) | positions.astype(np.int64)
    size = comm.sum(np.bincount(labels, minlength=k).astype(np.int64))
    target = np.minimum(size, per_cluster)
    lo = np.zeros(k, dtype=np.int64)
    hi = np.full(k, _KEY_MAX, dtype=np.int64)
    hi[target == 0] = -1  # empty cluster: nothing selected
    lo[target == 0] = -1
    while np.any(lo < hi):  # identical on every rank (built from all-reduced counts)
        mid = lo + (hi - lo) // 2
        below = comm.sum(np.bincount(labels[key <= mid[labels]], minlength=k).astype(np.int64))
        enough = below >= target
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, np.minimum(mid + 1, hi))
    return key <= hi[labels]


def _cluster_level(rows: _Rows, k: int, n_iter: int, n_resampling: int, sample_size: int,
                   seed: int, tol: float, kpp_sample: int | None, comm: Comm,
                   device: torch.device, chunk_size: int,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One level: k-means, then resampling rounds (as ``hkmeans._cluster_level``); returns
    ``(centroids, labels, sq distances)`` of this rank's rows."""
    ss = np.random.SeedSequence(seed)
    seeds = [int(s.generate_state(1)[0]) for s in ss.spawn(n_resampling + 1)]
    run = dict(n_iter=n_iter, tol=tol, kpp_sample=kpp_sample, comm=comm, device=device,
               chunk_size=chunk_size)  # fmt: skip
    c = _kmeans(rows, k, seed=seeds[0], **run)
    lab, dst = _assign(rows, c, device, chunk_size)
    if sample_size <= 1:
        return c, lab, dst
    positions = rows.start + np.arange(len(rows.index), dtype=np.int64)
    for r in range(n_resampling):
        keep = closest_mask(lab, dst, positions, k, sample_size, comm)
        picked = rows.subset(keep, comm)
        if picked.total < k:
            break
        c = _kmeans(picked, k, seed=seeds[r + 1], **run)
        lab, dst = _assign(rows, c, device, chunk_size)
    return c, lab, dst


def distributed_hierarchical_kmeans(
    x: np.ndarray,
    levels: Sequence[int],
    rows: np.ndarray | None = None,
    n_iter: int = 25,
    n_resampling_steps: int | Sequence[int] = 10,
    sample_size_ratio: float | Sequence[float] = 0.5,
    seed: int = 0,
    tol: float = 1e-4,
    kpp_sample: int | None = None,
    device: torch.device | str = "cpu",
    chunk_size: int = 16384,
    group: dist.ProcessGroup | None = None,
    progress: bool = False,
) -> HKMeansResult:
    """Hierarchical k-means with resampling over the ranks of ``group`` (see module docstring).

    Every rank calls it with the same arguments; each reads only its row slice of the points.

    Args:
        x: (M, D) array or ``np.memmap`` (any float dtype; read as float32 chunk by chunk).
        levels: clusters per level, bottom up; non-increasing, ``levels[0] <= N``.
        rows: the level-0 points are ``x[rows]`` (int64, e.g. the rows kept by dedup);
            None: every row of ``x``. N = ``len(rows)`` (or M); must be < 2**32.
        n_iter, n_resampling_steps, sample_size_ratio, seed, tol, kpp_sample: as in
            :func:`ssl_core.curation.hkmeans.hierarchical_kmeans`.
        device: where the distance GEMMs run (``cuda`` with an NCCL group).
        chunk_size: rows per GEMM (fewer at large ``k``: a block holds <= 2**24 distances).
        group: process group; None: the default one if initialised, else one rank.
        progress: log one line per level (rank 0).

    Returns:
        An :class:`~ssl_core.curation.hkmeans.HKMeansResult`. On rank 0 ``assignments[0]`` and
        ``distances[0]`` cover all N points; on another rank only its own slice
        (:func:`shard_bounds`). Upper levels and all centroids are the same on every rank.
    """
    comm = Comm(group)
    index = np.arange(len(x), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    n = len(index)
    levels = tuple(int(k) for k in levels)
    if not levels or levels[0] > n or any(b > a for a, b in zip(levels, levels[1:], strict=False)):
        raise ValueError(f"levels must be non-empty, non-increasing and <= N={n}, got {levels}")
    steps = [int(s) for s in _per_level(n_resampling_steps, len(levels), "n_resampling_steps")]
    ratios = [float(r) for r in _per_level(sample_size_ratio, len(levels), "sample_size_ratio")]
    device = torch.device(device)
    config = [list(x.shape), n, levels, n_iter, steps, ratios, seed, tol, kpp_sample, "dist-v1"]
    res = HKMeansResult(
        levels, [], [], [], hashlib.sha256(json.dumps(config).encode()).hexdigest()[:16]
    )
    lo, hi = shard_bounds(n, comm.world, comm.rank)
    cur = _Rows(x, index[lo:hi], lo, n)
    for lvl, k in enumerate(levels):
        s = max(1, round(ratios[lvl] * cur.total / k))
        lvl_seed = int(np.random.SeedSequence([seed, lvl]).generate_state(1)[0])
        lvl_comm = comm if lvl == 0 else Comm(local=True)
        c, lab, dst = _cluster_level(cur, k, n_iter, steps[lvl], s, lvl_seed, tol, kpp_sample,
                                     lvl_comm, device, chunk_size)  # fmt: skip
        if lvl == 0:
            lab, dst = comm.gather_rows(lab, n), comm.gather_rows(dst, n)
        if progress and comm.rank == 0:
            log.info("distributed hkmeans level %d (%d ranks): %d -> %d clusters, R=%d, "
                     "sample=%d", lvl, lvl_comm.world, cur.total, k, steps[lvl], s)  # fmt: skip
        res.centroids.append(c)
        res.assignments.append(lab)
        res.distances.append(dst)
        cur = _Rows(c, np.arange(k, dtype=np.int64), 0, k)
    return res
