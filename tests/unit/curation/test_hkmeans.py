"""Hierarchical k-means: shapes, determinism, checkpoints, effect of resampling."""

import numpy as np
import pytest

from ssl_core.curation import hkmeans as hk
from ssl_core.curation.hkmeans import hierarchical_kmeans, point_cluster_ids
from ssl_core.curation.kmeans import assign
from ssl_core.curation.sampling import balanced_sample
from ssl_core.curation.synthetic import hierarchical_mixture, zipf_sizes


@pytest.fixture(scope="module")
def data():
    x, comp = hierarchical_mixture(3000, dim=32, n_super=6, n_sub=5, seed=0)
    return x, comp


def test_shapes_and_point_ids(data):
    x, _ = data
    res = hierarchical_kmeans(x, (60, 12, 3), n_iter=10, n_resampling_steps=2, seed=0)
    assert [c.shape for c in res.centroids] == [(60, 32), (12, 32), (3, 32)]
    assert [a.shape for a in res.assignments] == [(3000,), (60,), (12,)]
    assert [d.shape for d in res.distances] == [(3000,), (60,), (12,)]
    assert all(a.max() < k for a, k in zip(res.assignments, (60, 12, 3), strict=True))
    ids = res.point_cluster_ids()
    assert ids.shape == (3000, 3)
    i = 1234
    a0, a1, a2 = res.assignments
    assert ids[i].tolist() == [a0[i], a1[a0[i]], a2[a1[a0[i]]]]
    np.testing.assert_array_equal(ids, point_cluster_ids(res.assignments))
    # distances[0] is the squared distance to the assigned centroid
    d = ((x - res.centroids[0][a0]) ** 2).sum(1)
    np.testing.assert_allclose(res.distances[0], d, rtol=1e-3, atol=1e-5)


def test_deterministic(data):
    x, _ = data
    kw = dict(levels=(40, 8), n_iter=8, n_resampling_steps=2, seed=5)
    r1, r2 = hierarchical_kmeans(x, **kw), hierarchical_kmeans(x, **kw)
    for a, b in zip(r1.centroids + r1.assignments, r2.centroids + r2.assignments, strict=True):
        np.testing.assert_array_equal(a, b)
    r3 = hierarchical_kmeans(x, **{**kw, "seed": 6})
    assert not np.array_equal(r1.assignments[0], r3.assignments[0])


def test_bad_levels(data):
    x, _ = data
    with pytest.raises(ValueError):
        hierarchical_kmeans(x, (10, 20))
    with pytest.raises(ValueError):
        hierarchical_kmeans(x[:5], (10,))
    with pytest.raises(ValueError, match="one per level"):
        hierarchical_kmeans(x, (10, 2), n_resampling_steps=(1, 2, 3))


def test_checkpoint_resume(data, tmp_path, monkeypatch):
    x, _ = data
    kw = dict(n_iter=8, n_resampling_steps=1, seed=1, checkpoint_dir=tmp_path)
    first = hierarchical_kmeans(x, (40, 8), **kw)
    assert first.resumed_levels == []
    assert not list(tmp_path.glob("*.tmp"))
    assert len(list(tmp_path.glob("*.npy"))) == 6

    calls = []
    real = hk._cluster_level

    def counting(*a, **k):
        calls.append(a[1])
        return real(*a, **k)

    monkeypatch.setattr(hk, "_cluster_level", counting)
    again = hierarchical_kmeans(x, (40, 8), **kw)
    assert calls == [] and again.resumed_levels == [0, 1]
    for a, b in zip(
        first.centroids + first.assignments, again.centroids + again.assignments, strict=True
    ):
        np.testing.assert_array_equal(a, b)
    # changing only the top level reuses level 0
    other = hierarchical_kmeans(x, (40, 5), **kw)
    assert calls == [5] and other.resumed_levels == [0]
    # different data -> nothing reused
    hierarchical_kmeans(x[::-1].copy(), (40, 8), **kw)
    assert calls == [5, 40, 8]


def test_resampling_spreads_centroids_over_zipf_mixture():
    # 100 Gaussian components on a 10x10 grid with Zipf(1.5) sizes. Plain k-means puts many
    # centroids in the big components; resampling moves them out to the small ones.
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(10), np.arange(10)), -1).reshape(-1, 2).astype(float)
    comp = np.repeat(np.arange(100), zipf_sizes(6000, 100, 1.5, rng))
    x = (grid[comp] + 0.15 * rng.standard_normal((len(comp), 2))).astype(np.float32)

    def run(steps):
        res = hierarchical_kmeans(x, (100,), n_resampling_steps=steps, seed=0)
        cells, _ = assign(res.centroids[0], grid.astype(np.float32))
        sample = balanced_sample(res, 600, seed=0)
        return len(np.unique(cells)), len(np.unique(comp[sample]))

    cells0, covered0 = run(0)
    cells10, covered10 = run(10)
    assert cells10 >= cells0 + 5  # measured 76 -> 86 grid cells own a centroid
    assert covered10 > covered0  # measured 93 -> 98 of 100 components in the sample


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the array data: np.load still reads it
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        _flip_byte,
        lambda p: p.write_bytes(p.read_bytes()[:-8]),  # truncated
        lambda p: p.with_name(p.name.split("_centroids")[0] + ".record.json").unlink(),
    ],
    ids=["flipped_byte", "truncated", "no_record"],
)
def test_damaged_level_checkpoint_is_recomputed(data, tmp_path, monkeypatch, caplog, damage):
    x, _ = data
    kw = dict(n_iter=8, n_resampling_steps=1, seed=1, checkpoint_dir=tmp_path)
    first = hierarchical_kmeans(x, (40, 8), **kw)
    assert len(list(tmp_path.glob("*.record.json"))) == 2
    level0 = next(tmp_path.glob("level0_*_centroids.npy"))
    damage(level0)
    calls = []
    real = hk._cluster_level
    monkeypatch.setattr(hk, "_cluster_level", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    with caplog.at_level("WARNING", logger=hk.log.name):
        again = hierarchical_kmeans(x, (40, 8), **kw)
    assert calls == [40] and again.resumed_levels == [1]  # level 0 computed again, not read
    assert (
        level0.name.split("_centroids")[0] in caplog.text
        and "computing the level again" in caplog.text
    )
    for a, b in zip(
        first.centroids + first.assignments, again.centroids + again.assignments, strict=True
    ):
        np.testing.assert_array_equal(a, b)
    calls.clear()
    hierarchical_kmeans(x, (40, 8), **kw)  # the recomputed level was recorded again
    assert calls == []
