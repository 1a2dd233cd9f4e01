"""Fast k-means on embeddings: Lloyd iterations seeded with greedy k-means++.

Random initialisation on imbalanced (Zipf-sized) data puts most centroids into the dense
modes; k-means++ seeding spreads them out and is what makes the downstream balanced sample
cover the small modes (see DESIGN.md, "Curation facts"). Exact k-means++ costs ``k``
sequential passes over the data, so it is run on a subsample and, for large ``k``, draws
``kpp_batch`` centres per D² round (batched k-means++; one GEMM per round instead of one pass
per centre).

The distance products run on torch fp32 GEMMs (:mod:`ssl_core.curation.nearest`; faiss's CPU
GEMM was 3-6x slower on these shapes). GPU: on CUDA when torch sees one (``SSLOPS_FAISS_GPU=0``
keeps it on the CPU). All randomness comes from ``seed``.

Large inputs: :func:`assign` and :func:`kmeans_with_distances` take float16 or float32 arrays,
``np.memmap`` included, and never convert the whole input to float32. Assignment converts (and,
when spherical, L2-normalises) one batch at a time; k-means++ and the Lloyd iterations gather
their subsample (``x[sorted indices]``) and convert only those rows. Peak memory is therefore
the Lloyd training set (``k * max_points_per_centroid`` rows, float32) plus the k-means++
sample, not ``N x D x 4`` bytes. A float16 array or memmap gives the same results as its own
float32 copy.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

import numpy as np
import torch

from ssl_core.curation import nearest as nn

__all__ = [
    "kmeans",
    "kmeans_with_distances",
    "fit_centroids",
    "kmeans_plus_plus",
    "default_trials",
    "assign",
    "l2_normalised",
]

log = logging.getLogger(__name__)

_LOG_EVERY_S = 60.0  # an assignment running longer than this logs its progress (INFO)


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


def assign(
    x: np.ndarray,
    centroids: np.ndarray,
    batch_size: int = 65536,
    normalise: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (squared L2; lowest index on ties) of every row of ``x``.

    ``x`` may be a float16/float32 array or ``np.memmap``: it is read, converted to float32
    (and L2-normalised when ``normalise``) one batch of ``batch_size`` rows at a time, so
    memory is ``O(batch_size * D)`` beyond the outputs. An assignment that runs longer than a
    minute logs its progress at INFO level every minute.

    Returns ``(labels int64 (N,), sq_dist float32 (N,))``.
    """
    x = _as_rows(x)
    n = len(x)
    cs = nn.Centroids(centroids)
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    t0 = time.monotonic()
    next_log = t0 + _LOG_EVERY_S
    for s in range(0, n, batch_size):
        xb = torch.from_numpy(_f32_rows(x[s : s + batch_size], normalise=normalise))
        lab, d2, _ = nn.assign_rows(xb.to(cs.t.device), cs)
        del xb  # before the next batch is read: one float32 batch alive at a time
        labels[s : s + batch_size] = lab.cpu().numpy()
        dist[s : s + batch_size] = d2.cpu().numpy()
        now = time.monotonic()
        if now >= next_log:
            done = min(n, s + batch_size)
            eta = (now - t0) * (n - done) / done
            log.info("assign: %d / %d rows to %d centroids, %.0f s, about %.0f s left",
                     done, n, len(centroids), now - t0, eta)  # fmt: skip
            next_log = now + _LOG_EVERY_S
    return labels, dist


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
    xt = torch.from_numpy(_as_f32(x)).to(nn.device())
    x_sq = (xt * xt).sum(1)
    chosen = np.zeros(n, dtype=bool)
    first = int(rng.integers(n))
    out = [first]
    chosen[first] = True
    d2 = _min_sq_dist(xt, xt[[first]]).astype(np.float64)
    d2[first] = 0.0
    while len(out) < k:
        b = min(batch, k - len(out))
        if not np.any(d2 > 0):  # all remaining points coincide with a centre: pick uniformly
            picks = rng.choice(np.flatnonzero(~chosen), size=b, replace=False)
        elif trials == 1:
            picks = _d2_without_replacement(d2, b, rng)
        else:
            picks, d2 = _greedy_round(xt, x_sq, d2, b, trials, rng)
        picks = np.asarray(picks, dtype=np.int64)
        out.extend(picks.tolist())
        chosen[picks] = True
        if trials == 1:
            d2 = np.minimum(d2, _min_sq_dist(xt, xt[picks]))
        d2[chosen] = 0.0
    return np.asarray(out[:k], dtype=np.int64)


def _d2_without_replacement(d2: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """``b`` distinct indices drawn in proportion to ``d2`` (top-b of ``u^(1/w)``)."""
    nz = np.flatnonzero(d2 > 0)
    keys = np.log(rng.random(len(nz))) / d2[nz]
    b_nz = min(b, len(nz))
    top = np.argpartition(-keys, b_nz - 1)[:b_nz] if b_nz < len(nz) else np.arange(len(nz))
    return nz[top]


def _min_sq_dist(xt: torch.Tensor, c: torch.Tensor) -> np.ndarray:
    """Squared L2 distance of every row of ``xt`` to its nearest row of ``c`` (numpy)."""
    return nn.assign_rows(xt, nn.Centroids(c, xt.device))[1].cpu().numpy()


def _greedy_round(
    xt: torch.Tensor,
    x_sq: torch.Tensor,
    d2: np.ndarray,
    b: int,
    trials: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``b`` greedy k-means++ centres from ``b * trials`` candidates drawn in proportion to
    ``d2``; returns them and the updated D². One distance product for the round."""
    cdf = np.cumsum(d2)
    u = rng.random(b * trials) * cdf[-1]
    cand = np.minimum(np.searchsorted(cdf, u, side="right"), len(d2) - 1)
    uniq, inv = np.unique(cand, return_inverse=True)
    rows = nn.sq_dists(xt[torch.from_numpy(uniq)], xt, x_sq).cpu().numpy()  # (u, n)
    taken = np.zeros(len(uniq), dtype=bool)
    picks = []
    for j in range(b):
        group = inv[j * trials : (j + 1) * trials]
        pots = np.minimum(d2[None, :], rows[group]).sum(1)
        pots[taken[group]] = np.inf
        if not np.isfinite(pots).any():  # every candidate of this centre is taken already
            break
        best = group[int(np.argmin(pots))]
        taken[best] = True
        picks.append(uniq[best])
        d2 = np.minimum(d2, rows[best])
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
    """k-means (Lloyd iterations), then every point assigned to its nearest centroid.

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
    """Centroids of k-means with Lloyd iterations (no final assignment of every point).

    Args:
        x: (N, D) data; float16/float32 arrays and memmaps are used as they are and never
            converted whole (see the module docstring), anything else is converted to float32.
        k: number of clusters, ``1 <= k <= N``.
        n_iter: Lloyd iterations.
        seed: seed for seeding, the Lloyd subsample and empty-cluster splits.
        init: ``"kmeans++"`` (batched k-means++ on a subsample) or ``"random"`` (k random rows
            of the Lloyd training set, as faiss initialises).
        kpp_sample: subsample size for k-means++ (default ``min(N, max(8 k, 20000))``).
        kpp_batch: centres drawn per k-means++ round (default ``ceil(k / 256)``; 1 = exact).
        kpp_trials: candidates per k-means++ centre, the best kept (default ``2 + ln k``,
            greedy k-means++; 1 = plain k-means++). See :func:`kmeans_plus_plus`.
        spherical: cosine k-means (rows and centroids L2-normalised).
        init_centroids: (k, D) warm start; overrides ``init``.
        max_points_per_centroid: Lloyd trains on at most ``k *`` this many points (random
            subsample); every point is assigned to the final centroids anyway.
        tol: stop the Lloyd iterations early once one iteration lowers the objective (sum of
            squared distances on the training points) by less than ``tol`` times its value;
            ``0`` runs all ``n_iter``. Seeded with k-means++, the objective is within 1e-4 of
            its 20-iteration value after ~6 iterations on the curation benchmark's data.
        verbose: log every Lloyd run's iterations and time at INFO level.

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
    """Lloyd iterations (:func:`ssl_core.curation.nearest.lloyd`) from ``c0`` on at most
    ``k * max_ppc`` random rows of ``x`` (float32, L2-normalised when ``spherical``); with no
    ``c0``, from ``k`` random rows of that training set."""
    n = len(x)
    m = k * max_ppc
    idx = np.sort(rng.choice(n, size=m, replace=False)) if n > m else None
    xs = _f32_rows(x, idx, spherical)
    if c0 is None:
        c0 = xs[np.sort(rng.choice(len(xs), size=k, replace=False))]
    t0 = time.monotonic()
    c, iters = nn.lloyd(xs, c0, n_iter, tol, rng, spherical)
    if verbose:
        log.info("lloyd: k=%d on %d rows, %d iterations, %.2f s", k, len(xs), iters,
                 time.monotonic() - t0)  # fmt: skip
    return c
