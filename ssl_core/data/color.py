"""A faster HSV hue shift for the colour jitter (issue #20).

kornia's ``adjust_hue`` converts RGB -> HSV -> RGB through a dozen ``torch.where`` passes; on
the CPU that is most of a ``ColorJitter`` call (25 of 31 ms for 64 crops of 56 px, measured).
:func:`adjust_hue_fast` computes the same HSV hue rotation with the hue read from the
largest channel (one nested ``where``, elementwise max/min) and the closed-form HSV -> RGB map

    out_n = V - C * clamp(min(k_n, 4 - k_n), 0, 1),   k_n = (n + 6 h') mod 6,  n = 5, 3, 1

(``V`` the max channel, ``C`` = max - min the chroma, ``h'`` the shifted hue in turns), which
keeps value and saturation as HSV does. Equal to kornia's result to float rounding
(``tests/unit/data/test_color.py``). :class:`ColorJitter` is kornia's ``ColorJitter`` with
this hue step: same parameters, sampling and order.
"""

from __future__ import annotations

import math

import kornia.augmentation as KA
import torch
from torch import Tensor

__all__ = ["ColorJitter", "adjust_hue_fast"]


def adjust_hue_fast(image: Tensor, factor: Tensor | float) -> Tensor:
    """Rotate the HSV hue of RGB ``image`` (``(*, 3, H, W)``, values in [0, 1]) by ``factor``
    radians (a scalar or one per image of the batch), as ``kornia.enhance.adjust_hue``."""
    if image.shape[-3] != 3:
        raise ValueError(f"expected (*, 3, H, W) RGB, got {tuple(image.shape)}")
    f = torch.as_tensor(factor, dtype=image.dtype, device=image.device)
    if f.ndim:  # one angle per image: broadcast over (H, W)
        f = f.reshape(*f.shape, *([1] * (image.ndim - 1 - f.ndim)))
    r, g, b = image.unbind(-3)
    v = torch.maximum(torch.maximum(r, g), b)  # (elementwise: ~10x faster than max(dim=-3))
    c = v - torch.minimum(torch.minimum(r, g), b)
    safe = torch.where(c > 0, c, torch.ones_like(c))
    # the first largest channel picks the branch (ties give the same hue either way)
    sextant = torch.where(
        r == v, (g - b) / safe, torch.where(g == v, 2 + (b - r) / safe, 4 + (r - g) / safe)
    )  # hue in sixths of a turn, [-1, 5)
    h = (sextant + f * (3 / math.pi)).unsqueeze(-3)  # shifted; radians -> sixths
    n = torch.tensor([5.0, 3.0, 1.0], dtype=image.dtype, device=image.device)
    k = torch.remainder(n.view(3, 1, 1) + h, 6.0)
    return v.unsqueeze(-3) - c.unsqueeze(-3) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


class ColorJitter(KA.ColorJitter):
    """kornia's ``ColorJitter`` (kornia 0.9: brightness, contrast, saturation, hue, order and
    per-sample factors unchanged) whose hue step is :func:`adjust_hue_fast`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if not hasattr(self, "_hue_fn"):  # kornia changed its internals: say so, don't guess
            raise RuntimeError(
                "kornia.augmentation.ColorJitter has no _hue_fn; update ssl_core/data/color.py"
            )
        self._hue_fn = adjust_hue_fast
