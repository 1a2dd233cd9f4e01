"""Streaming curation: float16 memmaps in, no full float32 copy, chunk-invariant generator."""

import hashlib
import tracemalloc

import numpy as np
import pytest

from ssl_core.curation import hkmeans as hk
from ssl_core.curation.hkmeans import hierarchical_kmeans
from ssl_core.curation.kmeans import assign, kmeans_with_distances
from ssl_core.curation.synthetic import hierarchical_mixture, write_hierarchical_mixture

MIX = dict(n=6000, dim=32, n_super=6, n_sub=5, seed=0)


@pytest.fixture(scope="module")
def small16(tmp_path_factory):
    """A small mixture as a float16 memmap and the in-memory float32 copy of its values."""
    d = tmp_path_factory.mktemp("small")
    write_hierarchical_mixture(d / "x.npy", d / "comp.npy", chunk=1000, **MIX)
    x16 = np.load(d / "x.npy", mmap_mode="r")
    return x16, np.asarray(x16, dtype=np.float32)


@pytest.fixture(scope="module")
def big16(tmp_path_factory):
    """A 262,144 x 384 float16 memmap (192 MiB; its float32 copy would be 384 MiB)."""
    path = tmp_path_factory.mktemp("big") / "x.npy"
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(1 << 18, 384))
    for a in range(0, len(x), 1 << 15):
        x[a : a + (1 << 15)] = rng.standard_normal((1 << 15, 384), dtype=np.float32)
    x.flush()
    del x
    return np.load(path, mmap_mode="r")


def _equal(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("spherical", [False, True])
def test_memmap_f16_same_kmeans_as_f32_copy(small16, spherical):
    x16, x32 = small16
    assert isinstance(x16, np.memmap) and x16.dtype == np.float16
    # 6000 > k * max_ppc = 1920: Lloyd runs on a subsample drawn by the seed in both cases
    kw = dict(k=30, n_iter=10, seed=1, spherical=spherical, max_points_per_centroid=64)
    assert _equal(kmeans_with_distances(x16, **kw), kmeans_with_distances(x32, **kw))


def test_memmap_f16_same_hkmeans_as_f32_copy(small16):
    x16, x32 = small16
    kw = dict(levels=(60, 12, 3), n_iter=10, n_resampling_steps=2, seed=0)
    r16, r32 = hierarchical_kmeans(x16, **kw), hierarchical_kmeans(x32, **kw)
    for a, b in [(r16.centroids, r32.centroids), (r16.assignments, r32.assignments)]:
        assert _equal(tuple(a), tuple(b))


def test_assign_normalise_streams_spherical(small16):
    x16, x32 = small16
    c = x32[:20] * 3.0
    xn = x32 / np.linalg.norm(x32, axis=1, keepdims=True)
    lab, dist = assign(x16, c, batch_size=1000, normalise=True)
    lab_ref, dist_ref = assign(xn, c)
    np.testing.assert_array_equal(lab, lab_ref)
    np.testing.assert_allclose(dist, dist_ref, rtol=1e-5, atol=1e-6)


def _peak_numpy_bytes(fn) -> int:
    """Peak traced allocation (numpy reports its array buffers to tracemalloc) during fn()."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_assign_memmap_never_copies_whole(big16):
    full_f32 = big16.size * 4
    c = np.asarray(big16[:16], dtype=np.float32)
    peak = _peak_numpy_bytes(lambda: assign(big16, c, batch_size=8192))
    # outputs (12 B per row) + one float32 batch; a full copy would be 384 MiB alone
    assert peak < 0.1 * full_f32, f"peak {peak / 2**20:.0f} MiB"


def test_kmeans_memmap_never_copies_whole(big16):
    full_f32 = big16.size * 4
    peak = _peak_numpy_bytes(
        lambda: kmeans_with_distances(big16, 16, n_iter=5, seed=0, max_points_per_centroid=256)
    )
    # k-means++ sample (20,000 rows) and one 65,536-row assignment batch, not the whole array
    assert peak < 0.4 * full_f32, f"peak {peak / 2**20:.0f} MiB"


def test_generator_chunk_invariant_and_matches_in_memory(tmp_path):
    write_hierarchical_mixture(tmp_path / "a.npy", tmp_path / "ca.npy", chunk=1000, **MIX)
    write_hierarchical_mixture(tmp_path / "b.npy", tmp_path / "cb.npy", chunk=777, **MIX)
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.dtype == np.float16 and a.shape == (6000, 32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.load(tmp_path / "ca.npy"), np.load(tmp_path / "cb.npy"))
    x, comp = hierarchical_mixture(chunk=2500, **MIX)
    np.testing.assert_array_equal(a, x.astype(np.float16))
    np.testing.assert_array_equal(np.load(tmp_path / "ca.npy"), comp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "ca.npy", "cb.npy"]


def test_data_hash_chunked_is_unchanged(small16):
    x16, x32 = small16

    def one_shot(x: np.ndarray) -> str:  # the digest before hashing in chunks
        h = hashlib.blake2b(digest_size=16)
        h.update(str((x.shape, str(x.dtype))).encode())
        h.update(memoryview(np.ascontiguousarray(x)).cast("B"))
        return h.hexdigest()

    for x in (x32, x16, np.asfortranarray(x32[:1001])):
        assert hk._data_hash(x, chunk_bytes=4096) == hk._data_hash(x) == one_shot(x)
    assert hk._data_hash(x16) == hk._data_hash(np.array(x16))
