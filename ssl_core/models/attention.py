"""Multi-head self-attention on ``scaled_dot_product_attention`` or ``flex_attention``.

Parameter names (``qkv``, ``proj``) match the official DINOv2 layout. A tensor mask (or none) runs
SDPA; a ``flex_attention`` :class:`BlockMask` (block-skipping sequence packing, see
``ssl_core.models.packing``) runs ``flex_attention``: on CUDA through one ``torch.compile``d
function cached in this module (eager ``flex_attention`` if compiling fails, with a warning), on
other devices eagerly (a reference implementation that computes the full scores; torch 2.13
refuses its backward on CPU).

bf16 on CPU: torch 2.13's bf16 flash-attention kernel for CPU has a backward that is 4-10x
slower than the fp32 one on the short sequences of multi-crop training (measured: 64 vs 14 ms
for (128, 6, 21, 64), 117 vs 12 ms for (256, 6, 9, 64), forward + backward). So
:func:`sdpa` runs attention in fp32 when its inputs are bf16 on CPU (the projections around it
stay bf16); the values are those of fp32 attention on the bf16-rounded q, k, v.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

_compiled_flex: Callable[..., Tensor] | None = None  # torch.compile(flex_attention), lazily
_compile_failed = False


def flex_usable(device: torch.device) -> bool:
    """Whether ``flex_attention`` skips masked blocks on ``device``: CUDA (compiled kernels) only."""
    return device.type == "cuda"


def _flex(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask) -> Tensor:
    """``flex_attention``, compiled once on CUDA (eager on failure, elsewhere, or when traced)."""
    global _compiled_flex, _compile_failed
    if not flex_usable(q.device) or _compile_failed or torch.compiler.is_compiling():
        return flex_attention(q, k, v, block_mask=block_mask)  # type: ignore[return-value]
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    try:
        return _compiled_flex(q, k, v, block_mask=block_mask)
    except Exception as err:  # inductor / triton failures have no common type
        _compile_failed = True
        warnings.warn(
            f"torch.compile(flex_attention) failed ({err!r}); using eager flex_attention",
            RuntimeWarning,
            stacklevel=2,
        )
        return flex_attention(q, k, v, block_mask=block_mask)  # type: ignore[return-value]


def sdpa(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """``F.scaled_dot_product_attention``, in fp32 for bf16 inputs on CPU (module docstring);
    the output has the inputs' dtype."""
    if q.dtype != torch.bfloat16 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    with torch.autocast("cpu", enabled=False):  # autocast would cast them back to bf16
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask)
    return out.to(q.dtype)


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

    def forward(self, x: Tensor, attn_mask: Tensor | BlockMask | None = None) -> Tensor:
        """Attend over the token sequence.

        Args:
            x: Tokens, (B, N, D).
            attn_mask: Optional mask. A tensor broadcastable to (B, heads, N, N) goes to SDPA
                (boolean: True means "may attend"; float: added to the logits); a BlockMask of
                shape (1 or B, 1 or heads, N, N) goes to ``flex_attention``.

        Returns:
            Tensor of shape (B, N, D).
        """
        b, n, d = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # (3, B, H, N, Dh)
        q, k, v = qkv.unbind(0)  # each (B, H, N, Dh)
        if isinstance(attn_mask, BlockMask):
            out = _flex(q, k, v, attn_mask)  # (B, H, N, Dh)
        else:
            out = sdpa(q, k, v, attn_mask)  # (B, H, N, Dh)
        out = out.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.proj(out)
