"""Squared-L2 nearest-centroid search and Lloyd iterations on torch fp32 GEMMs.

The hot loops of curation (k-means++ candidate distances, Lloyd's assignment, the assignment of
every point) are ``rows x centroids`` products. On CPU they used to go through faiss, whose
wheel multiplies at ~45 GFLOP/s on this machine kind; torch's fp32 GEMM runs the same shapes
several times faster (``benchmarks/results/kmeans_gemm.md``). bf16 (AMX) was measured and not
taken: on the hierarchical mixtures of the curation benchmark only 77-83 % of its picks agree
with fp32 (centroids there are near-ties), 98-99 % even after re-ranking its 4 best in fp32.

Everything here is fp32 and deterministic for a given thread count; ties go to the lowest
centroid index. Runs on CUDA when :func:`device` says so (same switch as faiss's GPU use).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

__all__ = ["Centroids", "device", "gpu_switched_off", "nearest", "sq_dists", "lloyd"]

#: elements of one (rows x centroids) score block; bounds the temporary at large k
_BLOCK = 2**22
#: faiss's perturbation when an empty cluster takes half of a big one (Clustering.cpp)
_SPLIT_EPS = 1.0 / 1024.0


def gpu_switched_off() -> bool:
    """``SSLOPS_FAISS_GPU=0`` (or ``false`` / ``no`` / ``off``): keep curation's k-means and
    dedup's faiss indexes on the CPU even where a GPU is available (``benchmarks/gpu_check.py``
    times GPU against CPU k-means with it). The name predates k-means leaving faiss."""
    return os.environ.get("SSLOPS_FAISS_GPU", "").strip().lower() in ("0", "false", "no", "off")


def device() -> torch.device:
    """CUDA when torch sees a GPU and :func:`gpu_switched_off` is false, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and not gpu_switched_off() else "cpu")


def chunk_rows(k: int) -> int:
    """Rows per block so that a block's ``rows x k`` scores stay near ``_BLOCK`` elements."""
    return max(256, min(16384, _BLOCK // max(k, 1)))


class Centroids:
    """Centroids prepared once for many :func:`nearest` calls: fp32 on the device + norms²."""

    def __init__(self, c: np.ndarray | torch.Tensor, dev: torch.device | None = None) -> None:
        dev = dev or device()
        t = torch.as_tensor(
            np.ascontiguousarray(c, dtype=np.float32) if isinstance(c, np.ndarray) else c
        )
        self.t = t.to(dev, torch.float32).contiguous()
        self.sq = (self.t * self.t).sum(1)

    def __len__(self) -> int:
        return int(self.t.shape[0])


def nearest(xb: torch.Tensor, cs: Centroids) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid (lowest index on ties) and squared distance (>= 0) of every row.

    ``argmin_j |c_j|² - 2 x·c_j`` is one fused ``addmm``; ``|x|²`` is added after the min.
    """
    scores = torch.addmm(cs.sq[None, :], xb, cs.t.T, beta=1.0, alpha=-2.0)
    smin, lab = scores.min(dim=1)
    return lab, (smin + (xb * xb).sum(1)).clamp_min_(0.0)


def sq_dists(cand: torch.Tensor, xt: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
    """``(m, n)`` squared distances of the rows ``cand`` to all rows of ``xt`` (norms² ``x_sq``):
    one row per candidate, contiguous, as k-means++ scans them."""
    out = torch.addmm(x_sq[None, :], cand, xt.T, beta=1.0, alpha=-2.0)
    return out.add_((cand * cand).sum(1)[:, None]).clamp_min_(0.0)


def assign_rows(xt: torch.Tensor, cs: Centroids) -> tuple[torch.Tensor, torch.Tensor, float]:
    """:func:`nearest` over all rows of ``xt`` in blocks; also the float64 sum of distances."""
    n = xt.shape[0]
    lab = torch.empty(n, dtype=torch.long, device=xt.device)
    d2 = torch.empty(n, dtype=torch.float32, device=xt.device)
    step = chunk_rows(len(cs))
    for s in range(0, n, step):
        lab[s : s + step], d2[s : s + step] = nearest(xt[s : s + step], cs)
    return lab, d2, float(d2.double().sum())


def _split_empty(c: torch.Tensor, counts: np.ndarray, rng: np.random.Generator) -> None:
    """faiss's rule for empty clusters, in place on ``c``: each takes a copy of a cluster drawn
    in proportion to ``size - 1``, the two moved apart by ±1/1024 on alternating dimensions,
    sizes halved."""
    empty = np.flatnonzero(counts == 0)
    sign = torch.ones(c.shape[1], dtype=c.dtype, device=c.device)
    sign[1::2] = -1.0
    for ci in empty:
        w = np.maximum(counts - 1, 0).astype(np.float64)
        if w.sum() <= 0:  # nothing to split: every cluster has one point
            break
        cj = int(rng.choice(len(counts), p=w / w.sum()))
        c[ci] = c[cj] * (1.0 + sign * _SPLIT_EPS)
        c[cj] = c[cj] * (1.0 - sign * _SPLIT_EPS)
        counts[ci] = counts[cj] // 2
        counts[cj] -= counts[ci]


def lloyd(
    x: np.ndarray,
    c0: np.ndarray,
    n_iter: int,
    tol: float,
    rng: np.random.Generator,
    spherical: bool = False,
) -> tuple[np.ndarray, int]:
    """Lloyd iterations from ``c0`` on the float32 rows ``x``; returns the centroids and the
    number of iterations run.

    Each iteration assigns every row to its nearest centroid (its objective is the sum of those
    squared distances), moves every centroid to the mean of its members (float32 sums, as
    faiss; a float64 copy of the training rows would double their memory),
    gives each empty cluster half of a big one (faiss's rule, :func:`_split_empty`) and, when
    ``spherical``, L2-normalises the centroids. Stops after ``n_iter`` iterations or, with
    ``tol > 0``, after the first iteration whose objective is less than ``tol`` times its value
    below the previous one (the assignment before the stopping test still updates the means).
    """
    dev = device()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
    k, d = c0.shape
    c = torch.from_numpy(np.array(c0, dtype=np.float32)).to(dev)
    prev, iters = math.inf, 0
    while iters < n_iter:
        iters += 1
        lab, _, obj = assign_rows(xt, Centroids(c, dev))
        sums = torch.zeros(k, d, dtype=torch.float32, device=dev).index_add_(0, lab, xt)
        counts = torch.bincount(lab, minlength=k)
        filled = counts > 0
        c = torch.where(filled[:, None], sums / counts.clamp_min(1)[:, None], c)
        if not bool(filled.all()):
            _split_empty(c, counts.cpu().numpy().copy(), rng)
        if spherical:
            c = c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if tol > 0 and prev - obj <= tol * abs(obj):
            break
        prev = obj
    return c.cpu().numpy(), iters
