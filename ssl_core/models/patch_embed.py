"""Image to patch tokens (``patch_embed.proj``, a P x P stride-P ``Conv2d``, in the official layout).

The forward computes the convolution as what it is, one matrix product over flattened patches
(``proj.weight`` viewed as (D, C P P)): the same values to float rounding; on CPU, forward +
weight gradient took 0.22 vs 0.44 s per ViT-S/14 step of issue #20 in bf16 (oneDNN's strided
convolution and its backward are slow there; docs/training.md). The parameters keep the
official layout.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding.

    Args:
        patch_size: Square patch side P.
        in_chans: Input channels C.
        embed_dim: Token width D.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """Embed patches.

        Args:
            x: Images, (B, C, H, W) with H and W multiples of the patch size.

        Returns:
            Tokens (B, H/P * W/P, D) in row-major patch order.
        """
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(x.shape)}")
        _, c, h, w = x.shape
        p = self.patch_size
        if c != self.in_chans:
            raise ValueError(f"expected {self.in_chans} channels, got {c}")
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of patch size {p}")
        b, gh, gw = x.shape[0], h // p, w // p
        patches = x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
        patches = patches.reshape(b, gh * gw, c * p * p)  # row-major patches, (C, P, P) flattened
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)  # (B, N, D)
