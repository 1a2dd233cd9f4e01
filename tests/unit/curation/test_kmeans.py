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


def _overlapping(seed=0, n=3000, d=8, k=30):
    """Gaussian data with no cluster structure: Lloyd keeps improving for many iterations."""
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32), k


def test_early_stop_is_one_iteration_at_a_time_of_the_same_lloyd():
    # tol=1 stops after the second iteration (the first has no previous objective), which must
    # be exactly faiss's own 2-iteration run from the same seeding.
    x, k = _overlapping()
    c_early, l_early, _ = kmeans_with_distances(x, k, n_iter=20, tol=1.0, seed=1)
    c_two, l_two, _ = kmeans_with_distances(x, k, n_iter=2, tol=0.0, seed=1)
    np.testing.assert_allclose(c_early, c_two, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(l_early, l_two)


def test_early_stop_reaches_the_objective_of_the_full_run():
    x, k = _overlapping(1)
    _, _, d_full = kmeans_with_distances(x, k, n_iter=60, tol=0.0, seed=2)
    _, _, d_tol = kmeans_with_distances(x, k, n_iter=60, tol=1e-4, seed=2)
    _, _, d_two = kmeans_with_distances(x, k, n_iter=2, tol=0.0, seed=2)
    full, tol, two = d_full.sum(), d_tol.sum(), d_two.sum()
    assert two > full * 1.01  # the data needs more than 2 iterations ...
    assert tol <= full * 1.005  # ... and the early-stopped run gets (almost) all of the way


def test_early_stop_with_subsampled_training_points():
    # n > k * max_points_per_centroid: one fixed subsample, every point still assigned
    x, k = _overlapping(2, n=4000)
    c, lab, dist = kmeans_with_distances(x, k, n_iter=30, tol=1e-4, max_points_per_centroid=20)
    assert c.shape == (k, 8) and lab.shape == (4000,)
    np.testing.assert_array_equal(lab, assign(x, c)[0])
    assert len(np.unique(lab)) == k
