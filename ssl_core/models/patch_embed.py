"""Image to patch tokens via a strided convolution (``patch_embed.proj`` in the official layout)."""

from __future__ import annotations

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
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
