import pytest
import torch

from ssl_core.data.masking import BlockMaskGenerator, sample_masks

GRID = (14, 14)
N = GRID[0] * GRID[1]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_block_generator_counts_and_shape():
    mg = BlockMaskGenerator(GRID)
    g = _gen(0)
    for target in [0, 10, 40, 98]:
        m = mg(target, g)
        assert m.shape == GRID and m.dtype == torch.bool
        assert int(m.sum()) <= target
        assert int(m.sum()) >= 0.9 * target
    assert mg(0, g).sum() == 0


def test_blocks_are_contiguous_not_scattered():
    # a block mask has far fewer masked/unmasked horizontal transitions than a random one
    m = BlockMaskGenerator(GRID)(60, _gen(1)).int()
    transitions = int((m[:, 1:] != m[:, :-1]).sum())
    assert transitions < 40


def test_sample_masks_ratio_and_probability():
    B = 200
    masks = sample_masks(B, GRID, mask_probability=0.5, ratio_range=(0.1, 0.5), generator=_gen(2))
    assert masks.shape == (B, N) and masks.dtype == torch.bool
    counts = masks.sum(-1)
    masked = counts > 0
    assert int(masked.sum()) == int(B * 0.5)
    ratios = counts[masked].float() / N
    # upper bound is exact; the block generator may fall a few patches short of the lower bound
    assert ratios.max() <= 0.5 + 1e-6
    assert ratios.min() >= 0.1 - 3 / N
    # ratios spread over the whole range (linspace strata)
    assert ratios.min() < 0.15 and ratios.max() > 0.45
    # shuffled: masked images are not all first
    assert not masked[: B // 2].all()


@pytest.mark.parametrize("p", [0.0, 0.25, 1.0])
def test_share_of_masked_images(p):
    masks = sample_masks(64, GRID, mask_probability=p, generator=_gen(3))
    assert int((masks.sum(-1) > 0).sum()) == int(64 * p)


def test_determinism_and_no_global_rng():
    state = torch.get_rng_state()
    a = sample_masks(32, GRID, generator=_gen(4))
    b = sample_masks(32, GRID, generator=_gen(4))
    c = sample_masks(32, GRID, generator=_gen(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError):
        sample_masks(4, GRID)
