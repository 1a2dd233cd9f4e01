"""Fast k-means on embeddings: faiss Lloyd iterations seeded with k-means++.

``faiss.Kmeans`` only offers random initialisation, which on imbalanced (Zipf-sized) data
puts most centroids into the dense modes; k-means++ seeding spreads them out and is what makes
the downstream balanced sample cover the small modes (see DESIGN.md, "Curation facts").
Exact k-means++ costs ``k`` sequential passes over the data, so it is run on a subsample and,
for large ``k``, draws ``kpp_batch`` centres per D² round (batched k-means++; one GEMM per
round instead of one pass per centre).

GPU: when ``faiss.get_num_gpus() > 0`` both the Lloyd iterations and the assignment run on
the GPU; otherwise on CPU. All randomness comes from ``seed``.
"""

from __future__ import annotations

import math
from typing import Literal

import faiss
import numpy as np

__all__ = ["kmeans", "kmeans_with_distances", "kmeans_plus_plus", "assign", "use_gpu"]


def use_gpu() -> bool:
    """True when the installed faiss build sees at least one GPU and GPU use is not switched off.

    ``SSLOPS_FAISS_GPU=0`` (or ``false`` / ``no`` / ``off``) in the environment keeps every
    faiss call of this module and of :mod:`ssl_core.curation.dedup` on the CPU even where a GPU
    is available (``benchmarks/gpu_check.py`` times GPU against CPU k-means with it); unset or
    any other value: use the GPU whenever faiss sees one.
    """
    import os

    if os.environ.get("SSLOPS_FAISS_GPU", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        return faiss.get_num_gpus() > 0
    except AttributeError:  # pragma: no cover - very old faiss
        return False


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return _as_f32(x / np.maximum(n, 1e-12))


def _flat_index(d: int, metric: Literal["l2", "ip"] = "l2") -> faiss.Index:
    """Exact flat index on GPU when available, else CPU."""
    index = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    if use_gpu():  # pragma: no cover - no GPU in CI
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def assign(
    x: np.ndarray, centroids: np.ndarray, batch_size: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (squared L2) of every row of ``x``.

    Returns ``(labels int64 (N,), sq_dist float32 (N,))``. Searches in batches to bound memory.
    """
    x = _as_f32(x)
    index = _flat_index(x.shape[1], "l2")
    index.add(_as_f32(centroids))
    labels = np.empty(len(x), dtype=np.int64)
    dist = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), batch_size):
        d, i = index.search(x[s : s + batch_size], 1)
        labels[s : s + batch_size] = i[:, 0]
        dist[s : s + batch_size] = np.maximum(d[:, 0], 0.0)
    return labels, dist


_SMALL = 2**22  # n * d * n_centres below which einsum beats a faiss call (thread start-up)


def _min_sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared L2 distance of every row of ``x`` to its nearest row of ``c``.

    Large problems go through faiss (not ``x @ c.T``) so that all heavy maths shares faiss's
    OpenMP pool: mixing numpy's OpenBLAS threads with faiss's measured a 2-3x slowdown of the
    following faiss calls on 2 cores. Tiny ones (upper levels) use a thread-free einsum.
    """
    if x.size * len(c) <= _SMALL:  # tiny: plain single-threaded einsum, no thread pools
        d = np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * np.einsum("ij,kj->ik", x, c)
        return np.maximum((d + np.einsum("ij,ij->i", c, c)[None, :]).min(axis=1), 0.0)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(_as_f32(c))
    d, _ = index.search(x, 1)
    return np.maximum(d[:, 0], 0.0)


def kmeans_plus_plus(
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    batch: int = 1,
) -> np.ndarray:
    """k-means++ (D² sampling) seeding; returns indices (k,) into ``x``.

    ``batch`` > 1 draws that many centres per round (without replacement, proportional to the
    current D²) and updates the distances with one matrix product: ``ceil(k / batch)`` passes
    instead of ``k``. ``batch=1`` is exact k-means++.
    """
    n = len(x)
    if k > n:
        raise ValueError(f"k-means++: k={k} > n={n}")
    x = _as_f32(x)
    chosen = np.zeros(n, dtype=bool)
    first = int(rng.integers(n))
    out = [first]
    chosen[first] = True
    d2 = _min_sq_dist(x, x[[first]]).astype(np.float64)
    d2[first] = 0.0
    while len(out) < k:
        b = min(batch, k - len(out))
        nz = np.flatnonzero(d2 > 0)
        if len(nz) == 0:  # all remaining points coincide with a centre: pick uniformly
            rest = np.flatnonzero(~chosen)
            picks = rng.choice(rest, size=b, replace=False)
        else:
            # Weighted sampling without replacement (Efraimidis-Spirakis): top-b of u^(1/w).
            w = d2[nz]
            keys = np.log(rng.random(len(nz))) / w
            b_nz = min(b, len(nz))
            top = np.argpartition(-keys, b_nz - 1)[:b_nz] if b_nz < len(nz) else np.arange(len(nz))
            picks = nz[top]
        picks = np.asarray(picks, dtype=np.int64)
        out.extend(picks.tolist())
        chosen[picks] = True
        d2 = np.minimum(d2, _min_sq_dist(x, x[picks]))
        d2[chosen] = 0.0
    return np.asarray(out[:k], dtype=np.int64)


def kmeans(x: np.ndarray, k: int, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """k-means; returns ``(centroids (k, D) float32, assignments (N,) int64)``.

    See :func:`kmeans_with_distances` for the arguments.
    """
    c, labels, _ = kmeans_with_distances(x, k, **kwargs)
    return c, labels


def kmeans_with_distances(
    x: np.ndarray,
    k: int,
    n_iter: int = 25,
    seed: int = 0,
    init: Literal["kmeans++", "random"] = "kmeans++",
    kpp_sample: int | None = None,
    kpp_batch: int | None = None,
    spherical: bool = False,
    init_centroids: np.ndarray | None = None,
    max_points_per_centroid: int = 256,
    tol: float = 1e-4,
    verbose: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means with faiss Lloyd iterations.

    Args:
        x: (N, D) data.
        k: number of clusters, ``1 <= k <= N``.
        n_iter: Lloyd iterations.
        seed: seed for seeding, faiss subsampling and tie breaks.
        init: ``"kmeans++"`` (batched k-means++ on a subsample) or ``"random"`` (faiss default).
        kpp_sample: subsample size for k-means++ (default ``min(N, max(8 k, 20000))``).
        kpp_batch: centres drawn per k-means++ round (default ``ceil(k / 256)``; 1 = exact).
        spherical: cosine k-means (rows and centroids L2-normalised).
        init_centroids: (k, D) warm start; overrides ``init``.
        max_points_per_centroid: faiss trains on at most ``k *`` this many points (random
            subsample); every point is assigned to the final centroids anyway.
        tol: stop the Lloyd iterations early once one iteration lowers the objective (sum of
            squared distances on the training points) by less than ``tol`` times its value;
            ``0`` runs all ``n_iter``. Seeded with k-means++, the objective is within 1e-4 of
            its 20-iteration value after ~6 iterations on the curation benchmark's data.
        verbose: faiss progress output.

    Returns:
        ``(centroids float32 (k, D), assignments int64 (N,), sq_dist float32 (N,))`` where
        ``sq_dist`` is each point's squared L2 distance to its centroid (on the normalised
        rows when ``spherical``).
    """
    x = _as_f32(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D, got shape {x.shape}")
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points, got k={k}, n={n}")
    if init not in ("kmeans++", "random"):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    if spherical:
        x = _l2_normalise(x)
    rng = np.random.default_rng(seed)
    if init_centroids is not None:
        c0 = _as_f32(init_centroids)
        if c0.shape != (k, d):
            raise ValueError(f"init_centroids must have shape {(k, d)}, got {c0.shape}")
    elif init == "kmeans++":
        m = min(n, kpp_sample if kpp_sample is not None else max(8 * k, 20000))
        m = max(m, k)
        sub = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
        b = kpp_batch if kpp_batch is not None else max(1, math.ceil(k / 256))
        c0 = x[sub[kmeans_plus_plus(x[sub], k, rng, batch=b)]].copy()
    else:
        c0 = None
    if k == n and c0 is None:
        c0 = x.copy()
    if n_iter <= 0 and c0 is not None:
        centroids = c0
    else:
        centroids = _lloyd(x, k, c0, n_iter, tol, rng, spherical, max_points_per_centroid, verbose)
    labels, dist = assign(x, centroids)
    return centroids, labels, dist


def _lloyd(
    x: np.ndarray,
    k: int,
    c0: np.ndarray | None,
    n_iter: int,
    tol: float,
    rng: np.random.Generator,
    spherical: bool,
    max_ppc: int,
    verbose: bool,
) -> np.ndarray:
    """faiss Lloyd iterations from ``c0`` on at most ``k * max_ppc`` random rows of ``x``.

    With ``tol > 0`` faiss runs one iteration per call (its own loop has no stopping rule), on
    one fixed subsample, until the relative objective decrease falls below ``tol``. faiss keeps
    its handling of empty clusters (split a big one) in both modes.
    """
    n, d = x.shape
    early = tol > 0 and c0 is not None and n_iter > 1
    if early and n > k * max_ppc:  # subsample once; faiss would redraw it on every call
        x = x[np.sort(rng.choice(n, size=k * max_ppc, replace=False))]
    km = faiss.Kmeans(
        d,
        k,
        niter=1 if early else n_iter,
        seed=int(rng.integers(2**31 - 1)),
        spherical=spherical,
        gpu=use_gpu(),
        verbose=verbose,
        max_points_per_centroid=max(max_ppc, -(-len(x) // k)) if early else max_ppc,
        min_points_per_centroid=1,
    )
    if not early:
        km.train(x, init_centroids=c0)
        return _as_f32(km.centroids)
    c, prev = c0, math.inf
    for _ in range(n_iter):
        km.train(x, init_centroids=c)
        c = _as_f32(km.centroids)
        obj = float(km.obj[-1])  # objective of the assignment to the previous centroids
        if prev - obj <= tol * abs(obj):
            break
        prev = obj
    return c
