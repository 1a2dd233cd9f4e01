"""The fast hue shift equals kornia's HSV hue rotation, and the jitter built on it samples and
applies exactly what kornia's ColorJitter does."""

from __future__ import annotations

import math

import kornia.augmentation as KA
import pytest
import torch
from kornia.enhance import adjust_hue

from ssl_core.data.color import ColorJitter, adjust_hue_fast


def _images() -> torch.Tensor:
    """Random colours plus the edge cases: greys (no chroma), black, white, two-way ties for the
    largest channel, pure primaries and secondaries."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=g)
    x[0, :, :4] = x[0, :1, :4]  # greys
    x[1, :, 0, :] = 0.0  # black
    x[1, :, 1, :] = 1.0  # white
    x[2, 1] = x[2, 0]  # R == G ties
    x[3, 2] = x[3, 1]  # G == B ties
    x[4, :, 0, :6] = torch.eye(3).repeat(1, 2).T.reshape(6, 3).T  # primaries
    x[4, :, 1, :3] = 1 - torch.eye(3)  # secondaries
    return x


@pytest.mark.parametrize("angle", [0.0, 0.1, -0.3, 1.0, math.pi, -math.pi, 2.5])
def test_fast_hue_shift_equals_kornia(angle):
    x = _images()
    assert torch.allclose(adjust_hue_fast(x, angle), adjust_hue(x, angle), atol=2e-6)


def test_per_image_angles():
    x = _images()
    angles = torch.linspace(-math.pi, math.pi, len(x))
    assert torch.allclose(adjust_hue_fast(x, angles), adjust_hue(x, angles), atol=2e-6)


def test_jitter_matches_kornia_for_the_same_seed():
    x = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    args = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8)
    torch.manual_seed(5)
    ref = KA.ColorJitter(**args)(x)
    torch.manual_seed(5)
    fast = ColorJitter(**args)(x)
    assert not torch.allclose(ref, x)  # the jitter did something
    assert torch.allclose(fast, ref, atol=1e-5)


def test_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        adjust_hue_fast(torch.rand(2, 1, 4, 4), 0.1)
