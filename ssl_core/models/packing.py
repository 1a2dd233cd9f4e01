"""Sequence packing for multi-crop: several images' token sequences share one attention call.

Each input group i holds B_i images of T_i tokens. With G = gcd(B_i), every group is reshaped
to (G, k_i * T_i, D) (k_i = B_i / G images side by side), and the groups are concatenated along
the sequence: (G, S, D), S = sum_i k_i * T_i. A boolean block-diagonal mask keeps every image
attending only to its own tokens. Image ``j`` of group i (crop-major order) lands in packed row
``j % G``, slot ``j // G``.
"""

from __future__ import annotations

import math
from functools import reduce

import torch
from torch import Tensor


def block_diagonal_mask(lengths: list[int], device: torch.device | None = None) -> Tensor:
    """Boolean block-diagonal mask: token i may attend to token j iff both lie in one segment.

    Args:
        lengths: Segment lengths, in order.
        device: Device of the returned mask.

    Returns:
        Bool tensor (S, S) with S = sum(lengths), True on the diagonal blocks.
    """
    seg = torch.repeat_interleave(
        torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device)
    )  # (S,)
    return seg[:, None] == seg[None, :]  # (S, S)


def pack(tokens: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Pack per-group token tensors into one sequence batch.

    Args:
        tokens: Group tensors, each (B_i, T_i, D).

    Returns:
        ``(packed, mask)``: packed (G, S, D) tokens and the (S, S) boolean attention mask.
    """
    g = reduce(math.gcd, [t.shape[0] for t in tokens])
    rows, lengths = [], []
    for t in tokens:
        b, n, d = t.shape
        k = b // g
        rows.append(t.reshape(k, g, n, d).transpose(0, 1).reshape(g, k * n, d))  # (G, k*T, D)
        lengths += [n] * k
    return torch.cat(rows, dim=1), block_diagonal_mask(lengths, tokens[0].device)


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
