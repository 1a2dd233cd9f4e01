"""Distributed hierarchical k-means: 2 real gloo ranks give the 1-rank result; exact
resampling selection (ties, small clusters); sane balance; float16 memmaps read by chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_core.curation.collectives import Comm, shard_bounds
from ssl_core.curation.distributed_kmeans import closest_mask, distributed_hierarchical_kmeans
from ssl_core.curation.hkmeans import closest_per_cluster
from ssl_core.curation.sampling import balanced_sample
from ssl_core.curation.synthetic import hierarchical_mixture

N, DIM = 4000, 32
#: resampling > 0 at every level (level-1 sample size round(0.5 * 40 / 8) = 2 > 1)
KW = dict(levels=(40, 8), n_iter=10, n_resampling_steps=(2, 2), seed=3, chunk_size=512)


def _tied(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (cluster k-1 left empty, some tiny clusters) and distances with many ties."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(k - 1, size=n, p=np.r_[np.full(k - 3, 0.9 / (k - 3)), 0.07, 0.03])
    return labels.astype(np.int64), rng.integers(0, 4, n).astype(np.float32) * 0.25


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as under torchrun: the GEMMs are tiny and the CPUs shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """float16 ``.npy`` (read through a memmap) and the rows a dedup kept (with gaps)."""
    x, _ = hierarchical_mixture(N, dim=DIM, n_super=8, n_sub=5, seed=0)
    path = tmp_path_factory.mktemp("dk") / "x.npy"
    np.save(path, x.astype(np.float16))
    rows = np.flatnonzero(np.random.default_rng(1).random(N) > 0.03)
    return path, rows


def _worker(rank: int, world: int, store: str, x_path: str, rows: np.ndarray, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        x = np.load(x_path, mmap_mode="r")
        res = distributed_hierarchical_kmeans(x, rows=rows, **KW)
        labels, d2 = _tied(3001, 12, seed=7)
        lo, hi = shard_bounds(len(labels), world, rank)
        comm = Comm()
        mask = closest_mask(labels[lo:hi], d2[lo:hi], np.arange(lo, hi), 12, 40, comm)
        mask = comm.gather_rows(mask, len(labels))
        if rank == 0:
            arrays = {f"c{i}": c for i, c in enumerate(res.centroids)}
            arrays |= {f"a{i}": a for i, a in enumerate(res.assignments)}
            np.savez(out, d0=res.distances[0], mask=mask, **arrays)
        else:
            assert len(res.assignments[0]) == np.subtract(*shard_bounds(len(rows), world, 1)[::-1])
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_rank(data, tmp_path):
    path, rows = data
    out = tmp_path / "two.npz"
    mp.start_processes(_worker, args=(2, str(tmp_path / "store"), str(path), rows, str(out)),
                       nprocs=2, start_method="spawn")  # fmt: skip
    two = np.load(out)
    one = distributed_hierarchical_kmeans(np.load(path, mmap_mode="r"), rows=rows, **KW)  # no group
    assert len(one.assignments[0]) == len(two["a0"]) == len(rows)
    for lv in range(2):
        np.testing.assert_array_equal(two[f"a{lv}"], one.assignments[lv])
        np.testing.assert_allclose(two[f"c{lv}"], one.centroids[lv], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(two["d0"], one.distances[0], rtol=1e-5, atol=1e-6)
    labels, d2 = _tied(3001, 12, seed=7)
    np.testing.assert_array_equal(np.flatnonzero(two["mask"]), closest_per_cluster(labels, d2, 40))


@pytest.mark.parametrize("per_cluster", [1, 5, 40, 10_000])
def test_closest_mask_is_closest_per_cluster_with_ties(per_cluster):
    labels, d2 = _tied(2000, 12, seed=per_cluster)
    mask = closest_mask(labels, d2, np.arange(len(labels)), 12, per_cluster, Comm())
    np.testing.assert_array_equal(
        np.flatnonzero(mask), closest_per_cluster(labels, d2, per_cluster)
    )
    sizes = np.bincount(labels, minlength=12)
    assert sizes[-1] == 0  # an empty cluster selects nothing, and does not break the search
    np.testing.assert_array_equal(
        np.bincount(labels[mask], minlength=12), np.minimum(sizes, per_cluster)
    )


def test_closest_mask_breaks_ties_by_global_position():
    labels = np.zeros(6, dtype=np.int64)
    d2 = np.array([0.5, 0.0, 0.5, 0.5, -0.0, 0.5], dtype=np.float32)  # -0.0 ties with 0.0
    positions = np.array([10, 11, 3, 12, 13, 4])
    mask = closest_mask(labels, d2, positions, 1, 4, Comm())
    assert mask.tolist() == [False, True, True, False, True, True]  # 0.0s, then positions 3, 4


def test_separated_data_gives_balanced_nonempty_clusters():
    x, _ = hierarchical_mixture(3000, DIM, 4, 4, zipf_exponent=0.0, noise=0.05, seed=0)
    res = distributed_hierarchical_kmeans(x, (16, 4), n_iter=10, n_resampling_steps=2, seed=0)
    sizes = np.bincount(res.assignments[0], minlength=16)
    assert sizes.min() > 0
    assert np.bincount(res.assignments[1], minlength=4).min() > 0
    assert sizes.max() <= 5 * sizes.min()  # 16 equal components: no cluster swallows many
    picked = balanced_sample(res, 400, seed=0)
    assert len(picked) == 400 and np.bincount(res.assignments[0][picked], minlength=16).min() > 0


def test_float16_memmap_in_chunks_equals_float32_in_memory(data):
    path, rows = data
    x16 = np.load(path, mmap_mode="r")
    kw = dict(KW, levels=(20,), n_resampling_steps=1)
    a = distributed_hierarchical_kmeans(x16, rows=rows, **kw)
    b = distributed_hierarchical_kmeans(
        np.asarray(x16, np.float32)[rows], **dict(kw, chunk_size=512)
    )
    np.testing.assert_array_equal(a.assignments[0], b.assignments[0])
    np.testing.assert_allclose(a.centroids[0], b.centroids[0], rtol=1e-5, atol=1e-6)


def test_bad_levels_say_what_to_change():
    x = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="non-increasing and <= N=10"):
        distributed_hierarchical_kmeans(x, (20,))
