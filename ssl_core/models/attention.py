"""Multi-head self-attention on top of ``torch.nn.functional.scaled_dot_product_attention``.

Parameter names (``qkv``, ``proj``) match the official DINOv2 layout.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    Args:
        dim: Token width D.
        num_heads: Number of heads; ``dim`` must be divisible by it.
        qkv_bias: Bias on the fused qkv projection.
        proj_bias: Bias on the output projection.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Attend over the token sequence.

        Args:
            x: Tokens, (B, N, D).
            attn_mask: Optional mask broadcastable to (B, heads, N, N). Boolean: True means
                "may attend"; float: added to the attention logits.

        Returns:
            Tensor of shape (B, N, D).
        """
        b, n, d = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # (3, B, H, N, Dh)
        q, k, v = qkv.unbind(0)  # each (B, H, N, Dh)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, N, Dh)
        out = out.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.proj(out)
