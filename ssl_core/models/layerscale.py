"""Per-channel residual scaling (CaiT layer-scale); parameter name ``gamma`` as upstream."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerScale(nn.Module):
    """Multiply tokens by a learned per-channel vector.

    Args:
        dim: Token width D.
        init_value: Initial value of every entry of ``gamma``.
    """

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def reset_parameters(self) -> None:
        """Refill ``gamma`` with the initial value."""
        nn.init.constant_(self.gamma, self.init_value)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        return x * self.gamma
