"""Pre-norm transformer block with layer-scale and efficient stochastic depth."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask

from ssl_core.models.attention import Attention
from ssl_core.models.drop_path import drop_add_residual_stochastic_depth
from ssl_core.models.layerscale import LayerScale
from ssl_core.models.mlp import Mlp, SwiGLUFFN

NORM_EPS = 1e-6


class Block(nn.Module):
    """``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``.

    Args:
        dim: Token width D.
        num_heads: Attention heads.
        ffn: The feed-forward module (:class:`Mlp` or :class:`SwiGLUFFN`).
        layerscale_init: Initial layer-scale value; ``None`` disables layer-scale (no ``ls``
            parameters).
        drop_path: Stochastic-depth rate of this block (training only).
        qkv_bias: Bias on the qkv projection.
        proj_bias: Bias on the attention output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn: Mlp | SwiGLUFFN,
        layerscale_init: float | None = 1e-5,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.ls1: nn.Module = (
            LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        )
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = ffn
        self.ls2: nn.Module = (
            LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        )
        self.drop_path = drop_path

    def forward(self, x: Tensor, attn_mask: Tensor | BlockMask | None = None) -> Tensor:
        """Run the block.

        Args:
            x: Tokens, (B, N, D).
            attn_mask: Optional attention mask: a tensor (N, N) or (B or 1, heads or 1, N, N),
                or a ``flex_attention`` BlockMask broadcast over the batch (B = 1).

        Returns:
            Tensor of shape (B, N, D).
        """
        per_sample_mask = (
            isinstance(attn_mask, Tensor) and attn_mask.ndim == 4 and attn_mask.shape[0] > 1
        )

        def attn_res(t: Tensor, index: Tensor | None = None) -> Tensor:
            m = attn_mask[index] if (per_sample_mask and index is not None) else attn_mask
            return self.ls1(self.attn(self.norm1(t), attn_mask=m))

        def ffn_res(t: Tensor, index: Tensor | None = None) -> Tensor:
            return self.ls2(self.mlp(self.norm2(t)))

        if self.training and self.drop_path > 0.0:
            x = drop_add_residual_stochastic_depth(x, attn_res, self.drop_path)
            x = drop_add_residual_stochastic_depth(x, ffn_res, self.drop_path)
        else:
            x = x + attn_res(x)
            x = x + ffn_res(x)
        return x  # (B, N, D)
