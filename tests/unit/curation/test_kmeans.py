"""k-means wrapper: seeding, determinism, edge cases."""

import numpy as np
import pytest

from ssl_core.curation.kmeans import assign, kmeans, kmeans_plus_plus, kmeans_with_distances


def _blobs(seed=0, k=8, per=50, d=16):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 10
    x = np.repeat(centres, per, axis=0) + rng.standard_normal((k * per, d))
    return x.astype(np.float32), np.repeat(np.arange(k), per)


def test_recovers_separated_blobs():
    x, y = _blobs()
    c, lab = kmeans(x, 8, n_iter=10, seed=0)
    assert c.shape == (8, 16) and lab.shape == (400,)
    # each true blob maps to exactly one cluster and vice versa
    pairs = set(zip(y.tolist(), lab.tolist(), strict=True))
    assert len(pairs) == 8


def test_deterministic_and_seed_sensitive():
    x, _ = _blobs(1, k=20, per=20)
    c1, l1 = kmeans(x, 12, seed=3)
    c2, l2 = kmeans(x, 12, seed=3)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(l1, l2)
    c3, _ = kmeans(x, 12, seed=4)
    assert not np.array_equal(c1, c3)


def test_k_greater_than_n_raises():
    with pytest.raises(ValueError, match="k="):
        kmeans(np.zeros((5, 3), np.float32), 6)


def test_k_equals_n_and_random_init():
    x, _ = _blobs(2, k=4, per=3)
    c, lab = kmeans(x, 12, n_iter=5)
    assert sorted(lab.tolist()) == list(range(12))
    c, lab = kmeans(x, 4, n_iter=5, init="random")
    assert c.shape == (4, 16)


def test_kpp_spreads_over_imbalanced_blobs():
    # one blob with 1000 points, 9 blobs with 5 points: k-means++ should hit every blob
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10, 8)) * 1000
    sizes = [1000] + [5] * 9
    x = np.concatenate([centres[i] + rng.standard_normal((s, 8)) for i, s in enumerate(sizes)])
    y = np.repeat(np.arange(10), sizes)
    idx = kmeans_plus_plus(x.astype(np.float32), 10, np.random.default_rng(0), batch=1)
    assert len(set(y[idx].tolist())) == 10
    assert len(np.unique(idx)) == 10


def test_spherical_and_distances():
    x, _ = _blobs(3)
    c, lab, dist = kmeans_with_distances(x, 8, n_iter=5, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-4)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    lab2, d2 = assign(xn, c)
    np.testing.assert_array_equal(lab, lab2)
    np.testing.assert_allclose(dist, d2, rtol=1e-5, atol=1e-6)
