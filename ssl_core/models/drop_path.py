"""Efficient stochastic depth (upstream ``drop_add_residual_stochastic_depth``).

Instead of computing the residual branch for the whole batch and zeroing dropped samples, the
branch runs only on a random subset of the batch and is added back, rescaled, with
``index_add``; dropped samples cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def drop_add_residual_stochastic_depth(
    x: Tensor, residual_func: Callable[[Tensor, Tensor], Tensor], drop_rate: float
) -> Tensor:
    """Return ``x + residual`` where the residual is computed for a random batch subset only.

    The subset has ``max(int(B * (1 - drop_rate)), 1)`` samples (upstream rounding) and the
    residual is scaled by ``B / subset`` so the expectation matches the eval-mode output.

    Args:
        x: Input tokens, (B, N, D).
        residual_func: ``f(x_subset, index) -> residual`` for the selected samples; ``index``
            (S,) lets the branch slice per-sample side inputs (e.g. a per-sample mask).
        drop_rate: Probability in [0, 1) of dropping a sample's residual.

    Returns:
        Tensor of shape (B, N, D).
    """
    b = x.shape[0]
    subset = max(int(b * (1.0 - drop_rate)), 1)
    index = torch.randperm(b, device=x.device)[:subset]  # (S,)
    # index_select, not x[index]: its backward is an index_add, ~3x faster on CPU than the
    # accumulating index_put that advanced indexing backpropagates through (same values)
    residual = residual_func(x.index_select(0, index), index)  # (S, N, D)
    out = torch.index_add(
        x.flatten(1), 0, index, residual.to(x.dtype).flatten(1), alpha=b / subset
    )  # (B, N*D)
    return out.view_as(x)
