"""iBOT block-wise patch masks (Bao et al. 2022 "BEiT", Alg. 1; Zhou et al. 2022 "iBOT", §3.2;
DINOv2, Oquab et al. 2023, §4 "iBOT": mask ~50 % of images with ratio U(0.1, 0.5)).

``BlockMaskGenerator`` follows the official ``MaskingGenerator``: random rectangles (area in
[min_num_patches, remaining], log-uniform aspect in [1/max_aspect, max_aspect]) are added until the
target count is reached; it may stop slightly short when no rectangle fits the small remainder
(10 failed tries), exactly as upstream. ``sample_masks`` follows the official ``collate_data_and_cast``.

All randomness comes from the ``torch.Generator`` passed in (no global RNG).
"""

from __future__ import annotations

import math

import torch

__all__ = ["BlockMaskGenerator", "sample_masks"]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Integer in [lo, hi] inclusive (like ``random.randint``)."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


class BlockMaskGenerator:
    """Block masks on an (H, W) patch grid.

    Args:
        grid: (H, W) patch grid.
        min_num_patches: smallest rectangle area.
        max_aspect: aspect ratios are log-uniform in [1/max_aspect, max_aspect].
        max_num_patches: largest rectangle area (DINOv2: 0.5 * H * W; default).
    """

    def __init__(
        self,
        grid: tuple[int, int],
        min_num_patches: int = 4,
        max_aspect: float = 3.0,
        max_num_patches: int | None = None,
    ) -> None:
        self.height, self.width = grid
        self.num_patches = self.height * self.width
        self.min_num_patches = min_num_patches
        self.max_num_patches = (
            int(0.5 * self.num_patches) if max_num_patches is None else max_num_patches
        )
        self.log_aspect_ratio = (math.log(1.0 / max_aspect), math.log(max_aspect))

    def _add_block(self, mask: torch.Tensor, max_mask_patches: int, g: torch.Generator) -> int:
        """Try (10 times) to add one rectangle that masks 1..max_mask_patches new patches."""
        delta = 0
        for _ in range(10):
            target_area = _uniform(g, self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(_uniform(g, *self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = _randint(g, 0, self.height - h)
                left = _randint(g, 0, self.width - w)
                block = mask[top : top + h, left : left + w]
                new = h * w - int(block.sum())
                if 0 < new <= max_mask_patches:  # overlap allowed, budget respected
                    block.fill_(True)
                    delta += new
                if delta > 0:
                    break
        return delta

    def __call__(self, num_masking_patches: int, generator: torch.Generator) -> torch.Tensor:
        """(H, W) bool mask with (at most, usually exactly) ``num_masking_patches`` True."""
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        count = 0
        while count < num_masking_patches:
            budget = min(num_masking_patches - count, self.max_num_patches)
            delta = self._add_block(mask, budget, generator)
            if delta == 0:
                break
            count += delta
        return mask


def sample_masks(
    batch_size: int,
    grid: tuple[int, int],
    mask_probability: float = 0.5,
    ratio_range: tuple[float, float] = (0.1, 0.5),
    generator: torch.Generator | None = None,
    mask_generator: BlockMaskGenerator | None = None,
) -> torch.Tensor:
    """(B, H*W) bool masks for a batch of (global-crop) images, as DINOv2's collate.

    ``int(B * mask_probability)`` images are masked; their target ratios are drawn from the
    consecutive sub-intervals of ``linspace(*ratio_range, n_masked + 1)`` (so ratios spread evenly
    over the range), the others get an empty mask; the order is then shuffled.
    """
    if generator is None:
        raise ValueError("pass a torch.Generator: masks use no global RNG")
    g = generator
    mg = mask_generator or BlockMaskGenerator(grid)
    n_patches = grid[0] * grid[1]
    n_masked = int(batch_size * mask_probability)
    probs = torch.linspace(ratio_range[0], ratio_range[1], n_masked + 1).tolist()
    masks = []
    for i in range(n_masked):
        ratio = _uniform(g, probs[i], probs[i + 1])
        masks.append(mg(int(n_patches * ratio), g))
    for _ in range(n_masked, batch_size):
        masks.append(torch.zeros(grid, dtype=torch.bool))
    order = torch.randperm(batch_size, generator=g).tolist()
    return torch.stack([masks[i] for i in order]).flatten(1)
