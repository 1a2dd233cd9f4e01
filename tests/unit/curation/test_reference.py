"""The plain-PyTorch reference of the curation benchmark: exact maths, and the fast path matches it.

The benchmark's speed-up is only meaningful if the reference is a correct (and not needlessly
slow) implementation, so it is checked here against direct computations.
"""

import numpy as np
import pytest
import torch

from ssl_core.curation import metrics as M
from ssl_core.curation.hkmeans import hierarchical_kmeans
from ssl_core.curation.reference import _kpp, ref_assign, ref_hierarchical_kmeans, ref_kmeans
from ssl_core.curation.sampling import balanced_sample
from ssl_core.curation.synthetic import hierarchical_mixture


def test_ref_assign_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(1000, 16, generator=g), torch.randn(37, 16, generator=g)
    labels, dist = ref_assign(x, c, chunk=128)  # several chunks, one partial
    d = torch.cdist(x.double(), c.double()) ** 2
    torch.testing.assert_close(labels, d.argmin(1))
    torch.testing.assert_close(dist.double(), d.min(1).values, rtol=1e-4, atol=1e-4)


def test_kpp_picks_distinct_points_one_per_blob():
    # 8 tight, far-apart blobs: exact k-means++ with k=8 puts one centre in each
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 10)) * 50
    x = np.concatenate([c + rng.normal(size=(100, 10)) * 0.01 for c in centres])
    idx = _kpp(torch.from_numpy(x).float(), 8, torch.Generator().manual_seed(1))
    assert len(set(idx.tolist())) == 8
    assert sorted((idx // 100).tolist()) == list(range(8))


def test_ref_kmeans_recovers_planted_centres():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8)) * 20
    x = np.concatenate([c + rng.normal(size=(200, 8)) for c in centres]).astype(np.float32)
    c, labels, dist = ref_kmeans(x, 5, n_iter=20, seed=0)
    # every planted centre has a fitted centroid within the noise of its 200-point mean
    gap = np.linalg.norm(centres[:, None] - c[None], axis=-1).min(1)
    assert gap.max() < 0.5
    truth = np.repeat(np.arange(5), 200)
    for t in range(5):  # each blob is one cluster
        assert len(np.unique(labels[truth == t])) == 1
    np.testing.assert_allclose(dist, ((x - c[labels]) ** 2).sum(1), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("bad_k", [0, 11])
def test_ref_kmeans_rejects_bad_k(bad_k):
    with pytest.raises(ValueError, match="must be in"):
        ref_kmeans(np.zeros((10, 2), np.float32), bad_k)


def test_fast_balance_at_least_as_good_as_reference():
    # the benchmark's claim on a small hierarchical Zipf mixture: the fast path's 10 % sample is
    # as balanced over the true components as the reference's (small slack for seed noise)
    x, comp = hierarchical_mixture(4000, dim=32, n_super=8, n_sub=5, seed=0)
    levels, steps = (80, 16, 4), (0, 3, 3)
    fast = hierarchical_kmeans(x, levels, n_iter=20, n_resampling_steps=steps, seed=0)
    ref = ref_hierarchical_kmeans(x, levels, n_iter=20, n_resampling_steps=steps, seed=0)
    q = {}
    for name, res in (("fast", fast), ("ref", ref)):
        idx = balanced_sample(res, 400, strategy="random", seed=0)
        assert len(idx) == 400
        q[name] = M.summary(comp[idx], 40)
    rnd = M.summary(comp[np.random.default_rng(0).choice(4000, 400, replace=False)], 40)
    assert q["fast"]["largest_share"] <= q["ref"]["largest_share"] + 0.02
    assert q["fast"]["gini"] <= q["ref"]["gini"] + 0.03
    # and both beat a random sample, or the comparison says nothing
    assert q["ref"]["largest_share"] < rnd["largest_share"]
    assert q["fast"]["largest_share"] < rnd["largest_share"]
