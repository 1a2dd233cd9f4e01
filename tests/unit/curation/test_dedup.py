"""Exact / near-duplicate detection and decontamination on planted answers."""

import numpy as np
import pytest

from ssl_core.curation.dedup import (
    connected_components,
    decontaminate,
    exact_duplicates,
    near_duplicates,
)


def _unit(rng, n, d=64):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_duplicates_first_occurrence():
    rep = exact_duplicates(["a", "b", "a", "c", "b", "a"])
    assert rep.tolist() == [0, 1, 0, 3, 1, 0]
    keep = rep == np.arange(len(rep))
    assert keep.tolist() == [True, True, False, True, False, False]
    assert exact_duplicates([]).shape == (0,)


def test_connected_components_chain_and_min_root():
    # 5-4-3 chain, 0-2, 1 alone; edges given in awkward order
    root = connected_components(6, np.array([5, 3, 2]), np.array([4, 4, 0]))
    assert root.tolist() == [0, 1, 0, 3, 3, 3]


def test_connected_components_long_chain():
    n = 1000
    perm = np.random.default_rng(0).permutation(n)
    root = connected_components(n, perm[:-1], perm[1:])
    assert (root == 0).all()


def test_near_duplicates_planted():
    rng = np.random.default_rng(0)
    base = _unit(rng, 200)  # random unit vectors in 64-d: pairwise cosine ~ N(0, 1/8)
    dups_of = np.array([3, 3, 10, 50, 199])
    noisy = base[dups_of] + 0.02 * rng.standard_normal((5, 64)).astype(np.float32)
    x = np.concatenate([base, noisy])
    res = near_duplicates(x, threshold=0.95, k=8)
    removed = np.flatnonzero(~res.keep)
    assert removed.tolist() == list(range(200, 205))
    assert res.nearest_kept[200:].tolist() == dups_of.tolist()
    assert (res.nearest_kept_sim[200:] >= 0.95).all()
    assert (res.nearest_kept[:200] == -1).all() and np.isnan(res.nearest_kept_sim[:200]).all()
    assert res.n_components == 200
    assert res.component[200] == res.component[3] == res.component[201]
    assert res.representative[201] == 3


def test_near_duplicates_chain_forms_one_component():
    # a -> b -> c -> d with cos(consecutive) ~ 0.97 but cos(a, d) < 0.95
    rng = np.random.default_rng(1)
    a, u = _unit(rng, 2)
    u = u - (u @ a) * a
    u /= np.linalg.norm(u)
    angles = np.deg2rad([0, 12, 24, 36])
    chain = np.stack([np.cos(t) * a + np.sin(t) * u for t in angles]).astype(np.float32)
    others = _unit(rng, 50)
    x = np.concatenate([others[:20], chain[[2, 0, 3, 1]], others[20:]])
    res = near_duplicates(x, threshold=0.97, k=4)
    assert float(chain[0] @ chain[3]) < 0.95
    ids = np.arange(20, 24)
    assert len(set(res.component[ids].tolist())) == 1
    assert res.keep[ids].tolist() == [True, False, False, False]
    assert res.keep.sum() == 51


def test_near_duplicates_threshold_respected():
    rng = np.random.default_rng(2)
    a, u = _unit(rng, 2)
    u = u - (u @ a) * a
    u /= np.linalg.norm(u)
    pair = np.stack([a, np.cos(0.3) * a + np.sin(0.3) * u]).astype(np.float32)  # cos 0.955
    sim = float(pair[0] @ pair[1])
    assert near_duplicates(pair, threshold=sim + 1e-3).keep.all()
    assert near_duplicates(pair, threshold=sim - 1e-3).keep.tolist() == [True, False]


def test_distinct_points_all_kept():
    x = _unit(np.random.default_rng(3), 500)
    res = near_duplicates(x, threshold=0.9, k=16, batch_size=64)
    assert res.keep.all() and res.n_edges == 0


def test_decontaminate_removes_exactly_planted():
    rng = np.random.default_rng(4)
    pool = _unit(rng, 300)
    evals = _unit(rng, 40)
    planted = np.array([5, 77, 123, 299])
    pool[planted] = evals[[0, 9, 9, 39]] + 0.01 * rng.standard_normal((4, 64)).astype(np.float32)
    res = decontaminate(pool, evals, threshold=0.95)
    assert np.flatnonzero(~res.keep).tolist() == planted.tolist()
    assert res.nearest_eval[planted, 0].tolist() == [0, 9, 9, 39]
    assert (res.similarity[planted, 0] >= 0.95).all()
    assert (res.similarity[res.keep, 0] < 0.95).all()


def test_decontaminate_dim_mismatch():
    with pytest.raises(ValueError):
        decontaminate(np.ones((3, 4)), np.ones((3, 5)), 0.9)
