"""Balanced hierarchical sampling on known answers."""

import numpy as np
import pytest

from ssl_core.curation.sampling import allocate, balanced_sample, find_cap


def test_find_cap():
    assert find_cap(np.array([10, 1, 5]), 7) == 3  # min(.,3): 3+1+3 = 7
    assert find_cap(np.array([10, 1, 5]), 8) == 3  # cap 4 -> 9 > 8
    assert find_cap(np.array([10, 1, 5]), 100) == 10
    assert find_cap(np.array([4, 4, 4]), 2) == 0
    sizes = np.random.default_rng(0).integers(1, 500, 300)
    for t in (0, 1, 999, 20000, int(sizes.sum()) - 1):
        cap = find_cap(sizes, t)
        assert np.minimum(sizes, cap).sum() <= t < np.minimum(sizes, cap + 1).sum()


def test_allocate_exact_capped():
    rng = np.random.default_rng(0)
    sizes = np.array([100, 3, 50, 1, 7])
    out = allocate(sizes, 40, rng)
    assert out.sum() == 40 and (out <= sizes).all()
    assert out[[1, 3, 4]].tolist() == [3, 1, 7]  # small clusters whole
    assert out.max() - out[[0, 2]].min() <= 1  # big ones equal up to +1
    with pytest.raises(ValueError, match="cannot take"):
        allocate(sizes, 1000, rng)


def _two_level():
    # level 0: 6 clusters with sizes 100, 2, 30, 5, 60, 3 (points listed cluster by cluster)
    sizes0 = np.array([100, 2, 30, 5, 60, 3])
    a0 = np.repeat(np.arange(6), sizes0)
    perm = np.random.default_rng(0).permutation(len(a0))
    a0 = a0[perm]
    a1 = np.array([0, 0, 1, 1, 2, 2])  # top clusters: {0,1}=102, {2,3}=35, {4,5}=63
    return a0, a1, sizes0


def test_balanced_sample_exact_and_capped():
    a0, a1, _ = _two_level()
    for target in (0, 1, 30, 60, 77, 150, 199, 200):
        sel = balanced_sample([a0, a1], target, seed=1)
        assert len(sel) == target and len(np.unique(sel)) == target
    sel = balanced_sample([a0, a1], 60, seed=1)
    top = np.bincount(a1[a0[sel]], minlength=3)
    assert top.tolist() == [20, 20, 20]
    lvl0 = np.bincount(a0[sel], minlength=6)
    # small clusters taken whole (2, 5, 3), large ones share the rest evenly
    assert lvl0[[1, 3, 5]].tolist() == [2, 5, 3]
    assert lvl0[[0, 2, 4]].tolist() == [18, 15, 17]


def test_no_top_cluster_exceeds_cap_plus_one():
    rng = np.random.default_rng(5)
    sizes = rng.zipf(1.5, 80).clip(1, 5000)
    a0 = rng.permutation(np.repeat(np.arange(80), sizes))
    a1 = rng.integers(0, 10, 80)
    a1[:10] = np.arange(10)  # every top cluster non-empty
    flat_top = np.bincount(a1, weights=sizes, minlength=10).astype(int)
    target = len(a0) // 3
    cap = find_cap(flat_top, target)
    sel = balanced_sample([a0, a1], target, seed=0)
    got = np.bincount(a1[a0[sel]], minlength=10)
    assert len(sel) == target
    assert (got <= cap + 1).all()
    assert (got[flat_top <= cap] == flat_top[flat_top <= cap]).all()


def test_closest_picks_nearest_and_random_is_seeded():
    a0, a1, _ = _two_level()
    dist = np.random.default_rng(3).random(len(a0))
    sel = balanced_sample([a0, a1], 60, strategy="closest", distances=dist)
    for c in range(6):
        members = np.flatnonzero(a0 == c)
        chosen = np.intersect1d(sel, members)
        rest = np.setdiff1d(members, chosen)
        if len(chosen) and len(rest):
            assert dist[chosen].max() <= dist[rest].min()
    s1 = balanced_sample([a0, a1], 60, seed=7)
    s2 = balanced_sample([a0, a1], 60, seed=7)
    s3 = balanced_sample([a0, a1], 60, seed=8)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, s3)


def test_errors():
    a0, a1, _ = _two_level()
    with pytest.raises(ValueError, match="target_size"):
        balanced_sample([a0, a1], 201)
    with pytest.raises(ValueError, match="distances"):
        balanced_sample([a0, a1], 10, strategy="closest")
