"""Label-free backbone health: RankMe, uniformity, artifact-token norms, cluster balance."""

import math

import pytest
import torch

from ssl_core.eval.feature_health import (
    OUTLIER_FACTOR,
    cluster_balance,
    effective_rank,
    token_norm_stats,
    uniformity,
)
from ssl_core.models.presets import build_vit
from ssl_core.models.vit import VisionTransformer

PLANTED = [0, 5, 10]  # patch positions (of 4x4 = 16) scaled up by the hook
GRID = 16


def _vit(num_register_tokens: int = 0) -> VisionTransformer:
    torch.manual_seed(0)
    return build_vit(
        "tiny",
        img_size=16,
        patch_size=4,
        embed_dim=64,
        depth=2,
        num_heads=2,
        num_register_tokens=num_register_tokens,
    )


def _images(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _plant(vit: VisionTransformer, factor: float = 50.0) -> torch.utils.hooks.RemovableHandle:
    """Scale the last block's output (the pre-norm tokens) at the PLANTED patch positions."""
    idx = [1 + vit.num_register_tokens + p for p in PLANTED]

    def hook(_module, _inputs, out):
        out = out.clone()
        out[:, idx] *= factor
        return out

    return vit.blocks[-1].register_forward_hook(hook)


# ------------------------------------------------------------------------------- effective_rank
def test_effective_rank_rank_one_is_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, generator=g) @ torch.randn(1, 32, generator=g)
    assert effective_rank(x) == pytest.approx(1.0, abs=0.01)
    assert effective_rank(torch.ones(50, 16)) == pytest.approx(1.0, abs=0.01)


def test_effective_rank_isotropic_is_near_full():
    x = torch.randn(4096, 32, generator=torch.Generator().manual_seed(0))
    assert 28 < effective_rank(x) <= 32
    assert effective_rank(torch.eye(8)) == pytest.approx(8.0, abs=1e-3)  # equal singular values


def test_effective_rank_rejects_bad_input():
    with pytest.raises(ValueError):
        effective_rank(torch.zeros(4, 3))
    with pytest.raises(ValueError):
        effective_rank(torch.ones(5))


# ----------------------------------------------------------------------------------- uniformity
def test_uniformity_collapsed_is_zero():
    assert uniformity(torch.ones(10, 8) * 3.0) == pytest.approx(0.0, abs=1e-12)


def test_uniformity_spread_is_negative_and_scale_free():
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    u = uniformity(x)
    assert u < -1.5
    assert uniformity(5.0 * x) == pytest.approx(u, abs=1e-9)  # computed on the unit sphere


def test_uniformity_antipodal_pair_exact():
    x = torch.tensor([[1.0, 0.0], [-2.0, 0.0]])  # ||x_i - x_j||^2 = 4 after normalising
    assert uniformity(x, t=2.0) == pytest.approx(-8.0)
    assert uniformity(x, t=0.5) == pytest.approx(-2.0)
    with pytest.raises(ValueError):
        uniformity(torch.ones(1, 4))


# ----------------------------------------------------------------------------- token_norm_stats
def test_token_norm_stats_flags_planted_outliers():
    vit = _vit().eval()
    base = token_norm_stats(vit, _images())
    handle = _plant(vit)
    try:
        planted = token_norm_stats(vit, _images())
    finally:
        handle.remove()
    share = len(PLANTED) / GRID
    assert planted["outlier_share"] == pytest.approx(share, abs=1e-6)
    assert base["outlier_share"] < share / 10
    assert planted["patch_norm_max"] > OUTLIER_FACTOR * planted["patch_norm_median"]
    assert planted["patch_norm_max"] == pytest.approx(50 * base["patch_norm_max"], rel=0.2)
    assert planted["n_tokens"] == base["n_tokens"] == 8 * GRID


def test_token_norm_stats_shapes_types_and_batching():
    vit = _vit()
    s = token_norm_stats(vit, _images(7), batch_size=64)
    t = token_norm_stats(vit, _images(7), batch_size=3)
    for key in ("patch_norm_median", "patch_norm_p99", "patch_norm_max", "outlier_share"):
        assert type(s[key]) is float
        assert s[key] == pytest.approx(t[key], rel=1e-5)
    assert type(s["n_tokens"]) is int and s["n_tokens"] == 7 * GRID
    assert s["patch_norm_median"] <= s["patch_norm_p99"] <= s["patch_norm_max"]
    assert len(s["hist"]["edges"]) == 31 and len(s["hist"]["counts"]) == 30
    assert sum(s["hist"]["counts"]) == s["n_tokens"]
    assert s["hist"]["counts"] == t["hist"]["counts"]


@pytest.mark.parametrize("training", [True, False])
def test_token_norm_stats_runs_in_eval_and_restores_flag(training):
    vit = _vit().train(training)
    seen: list[bool] = []
    handle = vit.blocks[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    try:
        token_norm_stats(vit, _images(4))
    finally:
        handle.remove()
    assert seen and not any(seen)
    assert vit.training is training
    assert all(m.training is training for m in vit.modules())


def test_token_norm_stats_registers():
    with_reg = token_norm_stats(_vit(num_register_tokens=4), _images(4))
    assert with_reg["num_register_tokens"] == 4
    assert type(with_reg["register_norm_median"]) is float
    assert with_reg["register_norm_median"] > 0
    assert with_reg["n_tokens"] == 4 * GRID  # registers are not counted as patches
    without = token_norm_stats(_vit(num_register_tokens=0), _images(4))
    assert without["num_register_tokens"] == 0
    assert without["register_norm_median"] is None


def test_token_norm_stats_planted_with_registers():
    vit = _vit(num_register_tokens=2)
    handle = _plant(vit)
    try:
        s = token_norm_stats(vit, _images(4))
    finally:
        handle.remove()
    assert s["outlier_share"] == pytest.approx(len(PLANTED) / GRID, abs=1e-6)


# ------------------------------------------------------------------------------ cluster_balance
def test_cluster_balance_uniform():
    b = cluster_balance([10, 10, 10, 10])
    assert b["clusters"] == 4 and b["nonempty"] == 4
    assert b["entropy_normalised"] == pytest.approx(1.0)
    assert b["gini"] == pytest.approx(0.0)
    assert b["largest_share"] == pytest.approx(0.25)


def test_cluster_balance_skewed():
    b = cluster_balance([97, 1, 1, 1])
    assert b["entropy_normalised"] < 0.2
    assert b["gini"] == pytest.approx(0.72)  # max for 4 clusters is 0.75
    assert b["largest_share"] == pytest.approx(0.97)


def test_cluster_balance_edge_cases():
    b = cluster_balance([5, 0, 5, 0])
    assert b["nonempty"] == 2
    assert b["entropy_normalised"] == pytest.approx(math.log(2) / math.log(4))
    assert b["gini"] == pytest.approx(0.5)
    single = cluster_balance([7])
    assert single["entropy_normalised"] == 0.0 and single["gini"] == 0.0
    for bad in ([], [0, 0], [3, -1], [[1, 2]]):
        with pytest.raises(ValueError):
            cluster_balance(bad)
