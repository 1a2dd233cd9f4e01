"""Feed-forward networks: GELU MLP (``fc1``/``fc2``) and SwiGLU (``w12``/``w3``, official giant)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Mlp(nn.Module):
    """Two-layer GELU MLP.

    Args:
        dim: Input/output width.
        hidden_dim: Hidden width.
        bias: Biases on both linear layers.
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward: ``w3(silu(x1) * x2)`` with ``x1, x2 = w12(x).chunk(2)``.

    Args:
        dim: Input/output width.
        hidden_dim: Gated hidden width (already sized, see :func:`swiglu_hidden_dim`).
        bias: Biases on both linear layers.
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        x1, x2 = self.w12(x).chunk(2, dim=-1)  # (..., H) each
        return self.w3(F.silu(x1) * x2)
