"""The written-out soft cross-entropy equals autograd's composite, values and gradients."""

from __future__ import annotations

import pytest
import torch

from ssl_core.loss.soft_ce import RowGroup, soft_cross_entropy
from tests.unit.loss.conftest import composite_soft_ce


def _case(dtype: torch.dtype):  # noqa: ANN202
    g = torch.Generator().manual_seed(0)
    b, k = 3, 11
    logits = torch.randn(6 * b, k, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    t0, t1 = (torch.softmax(torch.randn(b, k, generator=g, dtype=torch.float64), -1) for _ in "ab")
    targets = (t1, t0, t0 + t1)  # DINO's: each global meets the other, the locals both
    w_row = torch.rand(b, generator=g, dtype=torch.float64)
    groups = (RowGroup(0, b, 0, w_row), RowGroup(b, 2 * b, 1, 0.25), RowGroup(2 * b, 6 * b, 2, 0.1))
    return logits, targets, groups


def test_values_and_grads_equal_the_composite_in_float64() -> None:
    logits, targets, groups = _case(torch.float64)
    out = soft_cross_entropy(logits, 0.1, targets, groups)
    (grad,) = torch.autograd.grad(out * 1.7, logits)  # a non-unit upstream gradient
    ref = composite_soft_ce(logits, 0.1, targets, groups)
    (grad_ref,) = torch.autograd.grad(ref * 1.7, logits)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_bf16_logits_compute_in_float32_and_return_a_bf16_gradient() -> None:
    logits, targets, groups = _case(torch.bfloat16)
    targets = tuple(t.float() for t in targets)
    groups = tuple(RowGroup(g.start, g.stop, g.target, g.weight.float()) if torch.is_tensor(g.weight)
                   else g for g in groups)  # fmt: skip
    out = soft_cross_entropy(logits, 0.1, targets, groups)
    assert out.dtype == torch.float32
    (grad,) = torch.autograd.grad(out, logits)
    assert grad.dtype == torch.bfloat16
    ref = composite_soft_ce(logits.float(), 0.1, targets, groups)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    (grad_ref,) = torch.autograd.grad(
        composite_soft_ce(logits.float(), 0.1, targets, groups), logits
    )
    torch.testing.assert_close(grad.float(), grad_ref.float(), rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize(
    "groups",
    [
        (RowGroup(0, 3, 0, 1.0),),  # leaves rows uncovered
        (RowGroup(3, 6, 0, 1.0), RowGroup(0, 3, 0, 1.0)),  # out of order
        (RowGroup(0, 4, 0, 1.0), RowGroup(4, 6, 0, 1.0)),  # not whole target blocks
        (RowGroup(0, 6, 0, torch.ones(6)),),  # per-row weights over two blocks
    ],
)
def test_groups_must_tile_the_rows(groups) -> None:  # noqa: ANN001
    logits = torch.randn(6, 5, requires_grad=True)
    with pytest.raises(ValueError, match="row"):
        soft_cross_entropy(logits, 0.1, (torch.softmax(torch.randn(3, 5), -1),), groups)
