"""Exact and near-duplicate removal and eval-set decontamination.

* Exact: rows with the same sha256 keep their first occurrence.
* Near: cosine kNN (faiss inner product on L2-normalised rows, GPU when available, batched
  queries), an edge for every neighbour pair with cosine >= threshold, connected components
  (vectorised union-find: min-label hooking + pointer jumping), one kept row per component.
  The representative is the component's **lowest index** (stable, matches "first occurrence"
  of exact dedup and does not depend on the embedding model). Only the ``k`` nearest
  neighbours of each row are examined, so a row with more than ``k - 1`` near duplicates may
  miss some edges; chains still connect through the neighbours' own lists.
* Decontamination: drop pool rows whose nearest eval embedding has cosine >= threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from ssl_core.curation.nearest import gpu_switched_off

__all__ = [
    "NearDupResult",
    "DecontamResult",
    "exact_duplicates",
    "near_duplicates",
    "decontaminate",
    "connected_components",
]


def use_gpu() -> bool:
    """True when the installed faiss build sees a GPU and ``SSLOPS_FAISS_GPU`` does not switch
    GPU use off (:func:`ssl_core.curation.nearest.gpu_switched_off`)."""
    if gpu_switched_off():
        return False
    try:
        return faiss.get_num_gpus() > 0
    except AttributeError:  # pragma: no cover - very old faiss
        return False


@dataclass
class NearDupResult:
    """Output of :func:`near_duplicates`.

    Attributes:
        keep: (N,) bool, True for the one kept row of each component.
        component: (N,) int64 dense component id (0..n_components-1, ordered by lowest index).
        representative: (N,) int64 index of the kept row of each row's component.
        nearest_kept: (N,) int64, for removed rows the kept row it duplicates (its
            component's representative); -1 for kept rows.
        nearest_kept_sim: (N,) float32 cosine to ``nearest_kept``; NaN for kept rows.
        n_edges: number of undirected edges with cosine >= threshold found.
    """

    keep: np.ndarray
    component: np.ndarray
    representative: np.ndarray
    nearest_kept: np.ndarray
    nearest_kept_sim: np.ndarray
    n_edges: int

    @property
    def n_components(self) -> int:
        return int(self.component.max()) + 1 if self.component.size else 0


@dataclass
class DecontamResult:
    """Output of :func:`decontaminate`: ``keep`` (pool rows to keep), ``nearest_eval``
    ((N, k) int64 eval indices) and ``similarity`` ((N, k) float32 cosine), best first."""

    keep: np.ndarray
    nearest_eval: np.ndarray
    similarity: np.ndarray


def exact_duplicates(sha256: Sequence[str]) -> np.ndarray:
    """Representative (first occurrence) of every row's hash: ``(N,) int64``.

    Row ``i`` is kept iff ``rep[i] == i``; ``keep = rep == np.arange(len(rep))``.
    """
    keys = np.asarray(list(sha256), dtype=object)
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(keys.astype(str), return_index=True, return_inverse=True)
    return first[inverse.ravel()].astype(np.int64)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {x.shape}")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(n, 1e-12), dtype=np.float32)


def _ip_index(base: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(base.shape[1])
    if use_gpu():  # pragma: no cover - no GPU in CI
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(base)
    return index


def _knn(
    index: faiss.Index, q: np.ndarray, k: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    sims = np.empty((len(q), k), dtype=np.float32)
    ids = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), batch_size):
        d, i = index.search(q[s : s + batch_size], k)
        sims[s : s + batch_size], ids[s : s + batch_size] = d, i
    return sims, ids


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (= lowest index) of every node's component for undirected edges ``a[i]-b[i]``.

    Vectorised union-find: each round hooks the larger root of every edge onto the smaller
    (``np.minimum.at``) and then compresses paths by pointer jumping, until every edge joins
    nodes with the same root.
    """
    parent = np.arange(n, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while True:
        ra, rb = parent[a], parent[b]
        diff = ra != rb
        if not diff.any():
            return parent
        ra, rb = ra[diff], rb[diff]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:  # pointer jumping until every node points at a root
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp
        a, b = a[diff], b[diff]


def near_duplicates(
    emb: np.ndarray,
    threshold: float,
    k: int = 16,
    batch_size: int = 16384,
) -> NearDupResult:
    """Group rows whose cosine similarity is >= ``threshold`` (transitively) and keep one.

    Args:
        emb: (N, D) embeddings (normalised here).
        threshold: cosine similarity at or above which two rows are duplicates.
        k: neighbours examined per row (including itself).
        batch_size: query rows per faiss search.
    """
    x = _normalise(emb)
    n = len(x)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return NearDupResult(z.astype(bool), z, z, z, z.astype(np.float32), 0)
    kk = min(k, n)
    sims, ids = _knn(_ip_index(x), x, kk, batch_size)
    rows = np.repeat(np.arange(n, dtype=np.int64), kk)
    cols, s = ids.ravel(), sims.ravel()
    m = (cols >= 0) & (cols != rows) & (s >= threshold)
    a, b = rows[m], cols[m]
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], 1), axis=0)
    root = connected_components(n, pairs[:, 0], pairs[:, 1])
    _, component = np.unique(root, return_inverse=True)
    keep = root == np.arange(n)
    nearest = np.where(keep, -1, root)
    sim = np.full(n, np.nan, dtype=np.float32)
    rem = np.flatnonzero(~keep)
    sim[rem] = np.einsum("ij,ij->i", x[rem], x[root[rem]])
    return NearDupResult(keep, component.ravel().astype(np.int64), root, nearest, sim, len(pairs))


def decontaminate(
    pool_emb: np.ndarray,
    eval_emb: np.ndarray,
    threshold: float,
    k: int = 1,
    batch_size: int = 16384,
) -> DecontamResult:
    """Drop pool rows whose nearest eval embedding has cosine >= ``threshold``."""
    p, e = _normalise(pool_emb), _normalise(eval_emb)
    if p.shape[1] != e.shape[1]:
        raise ValueError(f"dimension mismatch: pool {p.shape[1]} vs eval {e.shape[1]}")
    if len(e) == 0:
        return DecontamResult(
            np.ones(len(p), bool),
            np.full((len(p), k), -1, np.int64),
            np.full((len(p), k), np.nan, np.float32),
        )
    sims, ids = _knn(_ip_index(e), p, min(k, len(e)), batch_size)
    return DecontamResult(sims[:, 0] < threshold, ids, sims)
