"""Sequence packing for multi-crop: several images' token sequences share one attention call.

Each input group i holds B_i images of T_i tokens. With G = gcd(B_i), every group is reshaped
to (G, k_i * T_i, D) (k_i = B_i / G images side by side), and the groups are concatenated along
the sequence: (G, S, D), S = sum_i k_i * T_i. Image ``j`` of group i (crop-major order) lands in
packed row ``j % G``, slot ``j // G``. Every row has the same segment layout, so one mask serves
all rows. Two masks keep every image attending only to its own tokens:

- ``"dense"``: an (S, S) boolean block-diagonal mask for ``scaled_dot_product_attention``. No
  kernel skips its masked blocks, so a row costs S^2 attention work instead of sum(T^2).
- ``"flex"``: a ``flex_attention`` :class:`BlockMask` (document mask over the segment ids). Its
  block-sparse kernels (CUDA, under ``torch.compile``) skip the (block_size x block_size) tiles
  holding no same-segment pair; eager ``flex_attention`` (CPU) still computes the full scores.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Literal

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from ssl_core.models.attention import flex_usable

PackedAttention = Literal["dense", "flex"]

# Tile size of the flex BlockMask: the block-sparse CUDA kernels need it to be a multiple of their
# own BLOCK_M / BLOCK_N (128 is torch's default and always valid). Smaller tiles skip more of a
# short row (see ``ssl_core.train.flops.attention_flops``) but may leave no valid kernel config.
FLEX_BLOCK_SIZE = 128


def segment_ids(lengths: list[int], device: torch.device | None = None) -> Tensor:
    """Segment index of every token of a row made of segments ``lengths``: (S,) int64."""
    return torch.repeat_interleave(
        torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device)
    )


def block_diagonal_mask(lengths: list[int], device: torch.device | None = None) -> Tensor:
    """Boolean block-diagonal mask: token i may attend to token j iff both lie in one segment.

    Args:
        lengths: Segment lengths, in order.
        device: Device of the returned mask.

    Returns:
        Bool tensor (S, S) with S = sum(lengths), True on the diagonal blocks.
    """
    seg = segment_ids(lengths, device)  # (S,)
    return seg[:, None] == seg[None, :]  # (S, S)


def document_block_mask(
    lengths: list[int], device: torch.device | None = None, block_size: int | None = None
) -> BlockMask:
    """``flex_attention`` BlockMask equal to :func:`block_diagonal_mask`, broadcast over batch/heads.

    Args:
        lengths: Segment lengths, in order.
        device: Device of the mask (must be the device of q, k, v).
        block_size: Tile size; default :data:`FLEX_BLOCK_SIZE`. S need not be a multiple of it
            (``create_block_mask`` pads the tail tile).

    Returns:
        BlockMask of shape (1, 1, S, S) whose ``mask_mod`` is ``seg[q] == seg[kv]``.
    """
    seg = segment_ids(lengths, device)  # (S,)
    s = seg.numel()

    def same_segment(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return seg[q_idx] == seg[kv_idx]

    return create_block_mask(
        same_segment, None, None, s, s, device=device, BLOCK_SIZE=block_size or FLEX_BLOCK_SIZE
    )


def resolve_packed_attention(
    packed: bool | str | None, device: torch.device
) -> PackedAttention | None:
    """Attention mask kind for ``forward_features_list(..., packed=...)``.

    ``False``/``None`` -> None (naive: one forward per resolution); ``"dense"``, ``"flex"`` -> as
    given; ``True`` -> ``"flex"`` where :func:`~ssl_core.models.attention.flex_usable` (CUDA), else
    ``"dense"``.
    """
    if packed is None or packed is False:
        return None
    if packed is True:
        return "flex" if flex_usable(device) else "dense"
    if packed in ("dense", "flex"):
        return packed  # type: ignore[return-value]
    raise ValueError(f"packed must be False, True, 'dense' or 'flex', got {packed!r}")


def pack(
    tokens: list[Tensor], mask: PackedAttention = "dense", block_size: int | None = None
) -> tuple[Tensor, Tensor | BlockMask]:
    """Pack per-group token tensors into one sequence batch.

    Args:
        tokens: Group tensors, each (B_i, T_i, D).
        mask: ``"dense"`` for an (S, S) boolean mask, ``"flex"`` for a BlockMask.
        block_size: BlockMask tile size (``"flex"`` only); default :data:`FLEX_BLOCK_SIZE`.

    Returns:
        ``(packed, mask)``: packed (G, S, D) tokens and the attention mask shared by all rows.
    """
    g = reduce(math.gcd, [t.shape[0] for t in tokens])
    rows, lengths = [], []
    for t in tokens:
        b, n, d = t.shape
        k = b // g
        rows.append(t.reshape(k, g, n, d).transpose(0, 1).reshape(g, k * n, d))  # (G, k*T, D)
        lengths += [n] * k
    device = tokens[0].device
    if mask == "flex":
        return torch.cat(rows, dim=1), document_block_mask(lengths, device, block_size)
    if mask != "dense":
        raise ValueError(f"mask must be 'dense' or 'flex', got {mask!r}")
    return torch.cat(rows, dim=1), block_diagonal_mask(lengths, device)


def unpack(packed: Tensor, shapes: list[tuple[int, int]]) -> list[Tensor]:
    """Inverse of :func:`pack`.

    Args:
        packed: (G, S, D) tokens.
        shapes: ``(B_i, T_i)`` per group, as given to :func:`pack`.

    Returns:
        Per-group tensors (B_i, T_i, D).
    """
    g, _, d = packed.shape
    sizes = [(b // g) * n for b, n in shapes]
    out = []
    for chunk, (b, n) in zip(packed.split(sizes, dim=1), shapes, strict=True):
        k = b // g
        out.append(chunk.reshape(g, k, n, d).transpose(0, 1).reshape(b, n, d))  # (B_i, T_i, D)
    return out
