"""Fast k-means on embeddings: faiss Lloyd iterations seeded with k-means++.

``faiss.Kmeans`` only offers random initialisation, which on imbalanced (Zipf-sized) data
puts most centroids into the dense modes; k-means++ seeding spreads them out and is what makes
the downstream balanced sample cover the small modes (see DESIGN.md, "Curation facts").
Exact k-means++ costs ``k`` sequential passes over the data, so it is run on a subsample and,
for large ``k``, draws ``kpp_batch`` centres per D² round (batched k-means++; one GEMM per
round instead of one pass per centre).

GPU: when ``faiss.get_num_gpus() > 0`` both the Lloyd iterations and the assignment run on
the GPU; otherwise on CPU. All randomness comes from ``seed``.

Large inputs: :func:`assign` and :func:`kmeans_with_distances` take float16 or float32 arrays,
``np.memmap`` included, and never convert the whole input to float32. Assignment converts (and,
when spherical, L2-normalises) one batch at a time; k-means++ and the Lloyd iterations gather
their subsample (``x[sorted indices]``) and convert only those rows. Peak memory is therefore
the Lloyd training set (``k * max_points_per_centroid`` rows, float32) plus the k-means++
sample, not ``N x D x 4`` bytes. A float32 in-memory array gives the same results as before
this streaming (bit-identical); a float16 array or memmap gives the same results as its own
float32 copy except where faiss would draw the Lloyd subsample itself (``tol=0``,
``init="random"`` or ``n_iter <= 1`` with ``N > k * max_points_per_centroid``): there the
subsample is drawn here with ``seed`` instead, so that faiss is never handed all ``N`` rows.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

import faiss
import numpy as np

__all__ = [
    "kmeans",
    "kmeans_with_distances",
    "fit_centroids",
    "kmeans_plus_plus",
    "default_trials",
    "assign",
    "l2_normalised",
    "use_gpu",
]

log = logging.getLogger(__name__)

_LOG_EVERY_S = 60.0  # an assignment running longer than this logs its progress (INFO)


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


def l2_normalised(x: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """A new contiguous float32 array of the L2-normalised rows ``x[idx]`` (all rows when
    ``idx`` is None; float16 and memmaps read row by row as NumPy does). The normalisation runs
    in place on the one copy the float32 conversion (or the row selection) makes."""
    xb = np.array(x, dtype=np.float32) if idx is None else np.asarray(x[idx], dtype=np.float32)
    return np.divide(xb, np.maximum(np.linalg.norm(xb, axis=1, keepdims=True), 1e-12), out=xb)


def _as_rows(x: np.ndarray) -> np.ndarray:
    """``x`` itself when it is a float16/float32 array (memmaps stay memmaps), else float32."""
    if isinstance(x, np.ndarray) and x.dtype in (np.float16, np.float32):
        return x
    return _as_f32(x)


def _in_memory_f32(x: np.ndarray) -> bool:
    """A float32 array in RAM (not a memmap): converting it whole costs nothing new."""
    return type(x) is np.ndarray and x.dtype == np.float32


def _f32_rows(x: np.ndarray, idx: np.ndarray | None = None, normalise: bool = False) -> np.ndarray:
    """Contiguous float32 ``x[idx]`` (all rows when ``idx`` is None), L2-normalised if asked.

    Only the selected rows are read and converted; for a float32 in-memory ``x`` without
    ``idx`` and ``normalise`` this is ``x`` itself (no copy).
    """
    if normalise:
        return l2_normalised(x, idx)
    return _as_f32(x if idx is None else x[idx])


def _flat_index(d: int, metric: Literal["l2", "ip"] = "l2") -> faiss.Index:
    """Exact flat index on GPU when available, else CPU."""
    index = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    if use_gpu():  # pragma: no cover - no GPU in CI
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def assign(
    x: np.ndarray,
    centroids: np.ndarray,
    batch_size: int = 65536,
    normalise: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (squared L2) of every row of ``x``.

    ``x`` may be a float16/float32 array or ``np.memmap``: it is read, converted to float32
    (and L2-normalised when ``normalise``) one batch of ``batch_size`` rows at a time, so
    memory is ``O(batch_size * D)`` beyond the outputs. An assignment that runs longer than a
    minute logs its progress at INFO level every minute.

    Returns ``(labels int64 (N,), sq_dist float32 (N,))``.
    """
    x = _as_rows(x)
    n = len(x)
    index = _flat_index(x.shape[1], "l2")
    index.add(_as_f32(centroids))
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    t0 = time.monotonic()
    next_log = t0 + _LOG_EVERY_S
    for s in range(0, n, batch_size):
        d, i = index.search(_f32_rows(x[s : s + batch_size], normalise=normalise), 1)
        labels[s : s + batch_size] = i[:, 0]
        dist[s : s + batch_size] = np.maximum(d[:, 0], 0.0)
        now = time.monotonic()
        if now >= next_log:
            done = min(n, s + batch_size)
            eta = (now - t0) * (n - done) / done
            log.info("assign: %d / %d rows to %d centroids, %.0f s, about %.0f s left",
                     done, n, len(centroids), now - t0, eta)  # fmt: skip
            next_log = now + _LOG_EVERY_S
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


def default_trials(k: int) -> int:
    """Candidates per centre of greedy k-means++: ``2 + ln k``, upstream's and scikit-learn's."""
    return 2 + int(np.log(max(k, 1)))


def kmeans_plus_plus(
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    batch: int = 1,
    trials: int | None = None,
) -> np.ndarray:
    """Greedy k-means++ (D² sampling) seeding; returns indices (k,) into ``x``.

    Every centre is the best of ``trials`` candidates drawn in proportion to D² (the one that
    lowers the potential, the sum of D², the most; default :func:`default_trials`), as
    facebookresearch/ssl-data-curation and scikit-learn seed. On hierarchical Zipf data this is
    what makes the balanced sample cover the small components (docs/curation.md, "Balance vs
    the reference"). ``trials=1`` is plain k-means++.

    ``batch`` > 1 picks that many centres per round from one distance computation: the round's
    candidates are drawn from the D² at its start and the centres chosen one after the other
    among them (plain k-means++: without replacement, Efraimidis-Spirakis); ``ceil(k / batch)``
    passes over ``x`` instead of ``k``. ``batch=1`` draws every centre from the current D².
    """
    n = len(x)
    if k > n:
        raise ValueError(f"k-means++: k={k} > n={n}")
    trials = default_trials(k) if trials is None else int(trials)
    if trials < 1:
        raise ValueError(f"k-means++: trials must be >= 1, got {trials}")
    x = _as_f32(x)
    chosen = np.zeros(n, dtype=bool)
    first = int(rng.integers(n))
    out = [first]
    chosen[first] = True
    d2 = _min_sq_dist(x, x[[first]]).astype(np.float64)
    d2[first] = 0.0
    while len(out) < k:
        b = min(batch, k - len(out))
        if not np.any(d2 > 0):  # all remaining points coincide with a centre: pick uniformly
            picks = rng.choice(np.flatnonzero(~chosen), size=b, replace=False)
        elif trials == 1:
            picks = _d2_without_replacement(d2, b, rng)
        else:
            picks, d2 = _greedy_round(x, d2, b, trials, rng)
        picks = np.asarray(picks, dtype=np.int64)
        out.extend(picks.tolist())
        chosen[picks] = True
        if trials == 1:
            d2 = np.minimum(d2, _min_sq_dist(x, x[picks]))
        d2[chosen] = 0.0
    return np.asarray(out[:k], dtype=np.int64)


def _d2_without_replacement(d2: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """``b`` distinct indices drawn in proportion to ``d2`` (top-b of ``u^(1/w)``)."""
    nz = np.flatnonzero(d2 > 0)
    keys = np.log(rng.random(len(nz))) / d2[nz]
    b_nz = min(b, len(nz))
    top = np.argpartition(-keys, b_nz - 1)[:b_nz] if b_nz < len(nz) else np.arange(len(nz))
    return nz[top]


def _greedy_round(
    x: np.ndarray, d2: np.ndarray, b: int, trials: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``b`` greedy k-means++ centres from ``b * trials`` candidates drawn in proportion to
    ``d2``; returns them and the updated D². One faiss distance computation for the round."""
    cdf = np.cumsum(d2)
    u = rng.random(b * trials) * cdf[-1]
    cand = np.minimum(np.searchsorted(cdf, u, side="right"), len(d2) - 1)
    uniq, inv = np.unique(cand, return_inverse=True)
    cols = np.maximum(faiss.pairwise_distances(x, x[uniq]), 0.0)  # (n, u) squared L2
    taken = np.zeros(len(uniq), dtype=bool)
    picks = []
    for j in range(b):
        group = inv[j * trials : (j + 1) * trials]
        pots = np.minimum(d2[:, None], cols[:, group]).sum(0)
        pots[taken[group]] = np.inf
        if not np.isfinite(pots).any():  # every candidate of this centre is taken already
            break
        best = group[int(np.argmin(pots))]
        taken[best] = True
        picks.append(uniq[best])
        d2 = np.minimum(d2, cols[:, best])
    return np.asarray(picks, dtype=np.int64), d2


def kmeans(x: np.ndarray, k: int, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """k-means; returns ``(centroids (k, D) float32, assignments (N,) int64)``.

    See :func:`kmeans_with_distances` for the arguments.
    """
    c, labels, _ = kmeans_with_distances(x, k, **kwargs)
    return c, labels


def kmeans_with_distances(
    x: np.ndarray, k: int, **kwargs: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means with faiss Lloyd iterations, then every point assigned to its nearest centroid.

    Takes the arguments of :func:`fit_centroids`. Returns ``(centroids float32 (k, D),
    assignments int64 (N,), sq_dist float32 (N,))`` where ``sq_dist`` is each point's squared
    L2 distance to its centroid (on the normalised rows when ``spherical``).
    """
    centroids = fit_centroids(x, k, **kwargs)
    labels, dist = assign(x, centroids, normalise=kwargs.get("spherical", False))
    return centroids, labels, dist


def fit_centroids(
    x: np.ndarray,
    k: int,
    n_iter: int = 25,
    seed: int = 0,
    init: Literal["kmeans++", "random"] = "kmeans++",
    kpp_sample: int | None = None,
    kpp_batch: int | None = None,
    kpp_trials: int | None = None,
    spherical: bool = False,
    init_centroids: np.ndarray | None = None,
    max_points_per_centroid: int = 256,
    tol: float = 1e-4,
    verbose: bool = False,
) -> np.ndarray:
    """Centroids of k-means with faiss Lloyd iterations (no final assignment of every point).

    Args:
        x: (N, D) data; float16/float32 arrays and memmaps are used as they are and never
            converted whole (see the module docstring), anything else is converted to float32.
        k: number of clusters, ``1 <= k <= N``.
        n_iter: Lloyd iterations.
        seed: seed for seeding, faiss subsampling and tie breaks.
        init: ``"kmeans++"`` (batched k-means++ on a subsample) or ``"random"`` (faiss default).
        kpp_sample: subsample size for k-means++ (default ``min(N, max(8 k, 20000))``).
        kpp_batch: centres drawn per k-means++ round (default ``ceil(k / 256)``; 1 = exact).
        kpp_trials: candidates per k-means++ centre, the best kept (default ``2 + ln k``,
            greedy k-means++; 1 = plain k-means++). See :func:`kmeans_plus_plus`.
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
        ``centroids float32 (k, D)`` (L2-normalised when ``spherical``).
    """
    x = _as_rows(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D, got shape {x.shape}")
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points, got k={k}, n={n}")
    if init not in ("kmeans++", "random"):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
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
        xs = _f32_rows(x, sub, spherical)  # (m, D): the only rows k-means++ reads
        c0 = xs[kmeans_plus_plus(xs, k, rng, batch=b, trials=kpp_trials)].copy()
    else:
        c0 = None
    if k == n and c0 is None:
        c0 = _f32_rows(x, np.arange(n), spherical)
    if n_iter <= 0 and c0 is not None:
        centroids = c0
    else:
        centroids = _lloyd(x, k, c0, n_iter, tol, rng, spherical, max_points_per_centroid, verbose)
    return centroids


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
    its handling of empty clusters (split a big one) in both modes. Rows are L2-normalised
    here when ``spherical`` (faiss normalises only the centroids).

    Without early stopping faiss draws the subsample itself from all rows it is given; that
    needs all of ``x`` as float32, so a float16 or memmapped ``x`` larger than ``k * max_ppc``
    rows is subsampled here instead (with ``rng``).
    """
    n, d = x.shape
    early = tol > 0 and c0 is not None and n_iter > 1
    m = k * max_ppc
    if n > m and (early or not _in_memory_f32(x)):  # early: one subsample, not one per call
        x = _f32_rows(x, np.sort(rng.choice(n, size=m, replace=False)), spherical)
    else:
        x = _f32_rows(x, None, spherical)
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
