"""torch nearest-centroid search and Lloyd iterations (ssl_core.curation.nearest)."""

import numpy as np
import torch

from ssl_core.curation import nearest as nn


def _brute(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1), d.min(1)


def test_nearest_matches_float64_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 24)).astype(np.float32) + 5.0  # an offset, as raw embeddings
    c = x[rng.choice(3000, 40, replace=False)] + 0.01
    lab, d2, total = nn.assign_rows(torch.from_numpy(x), nn.Centroids(c))
    want_lab, want_d2 = _brute(x, c)
    # fp32 may flip a pick only where two centroids are within rounding of each other
    flips = np.flatnonzero(lab.numpy() != want_lab)
    d_all = ((x[flips, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    gap = d_all[np.arange(len(flips)), lab.numpy()[flips]] - want_d2[flips]
    assert len(flips) <= 3 and np.all(gap <= 1e-3 * want_d2[flips])
    np.testing.assert_allclose(d2.numpy(), want_d2, rtol=1e-4, atol=1e-3)
    assert abs(total - want_d2.sum()) <= 1e-4 * want_d2.sum()


def test_ties_go_to_the_lowest_index_and_distances_are_not_negative():
    x = np.ones((5, 4), np.float32)
    c = np.ones((3, 4), np.float32)  # three identical centroids, every point on them
    lab, d2 = nn.nearest(torch.from_numpy(x), nn.Centroids(c))
    assert lab.tolist() == [0] * 5 and (d2 >= 0).all()


def test_sq_dists_is_the_pairwise_matrix():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    xt = torch.from_numpy(x)
    got = nn.sq_dists(xt[:7], xt, (xt * xt).sum(1)).numpy()
    want = ((x[None, :7] - x[:, None, :]) ** 2).sum(-1).T
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (got >= 0).all()


def test_lloyd_one_iteration_is_the_member_mean():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 8)).astype(np.float32)
    c0 = x[:10].copy()
    c, iters = nn.lloyd(x, c0, n_iter=1, tol=0.0, rng=rng)
    lab, _ = _brute(x, c0)
    want = np.stack([x[lab == j].astype(np.float64).mean(0) for j in range(10)])
    assert iters == 1
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-6)


def test_lloyd_splits_an_empty_cluster_instead_of_keeping_it():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (400, 4)), rng.normal(10, 1, (400, 4))]).astype(np.float32)
    c0 = np.array(
        [[0, 0, 0, 0], [10, 10, 10, 10], [1e4, 1e4, 1e4, 1e4]], np.float32
    )  # 3rd: no members
    c, _ = nn.lloyd(x, c0, n_iter=1, tol=0.0, rng=rng)
    assert np.abs(c[2]).max() < 100  # moved next to one of the two real clusters
    lab, _ = _brute(x, c)
    c2, _ = nn.lloyd(x, c, n_iter=5, tol=0.0, rng=rng)
    assert len(np.unique(_brute(x, c2)[0])) == 3 and len(np.unique(lab)) == 3


def test_lloyd_stops_early_and_never_raises_the_objective():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(m, 0.3, (300, 6)) for m in (0, 4, 8, 12)]).astype(np.float32)
    c0 = x[rng.choice(len(x), 8, replace=False)]
    c, iters = nn.lloyd(x, c0, n_iter=100, tol=1e-4, rng=rng)
    assert iters < 100
    assert _brute(x, c)[1].sum() <= _brute(x, c0)[1].sum()
