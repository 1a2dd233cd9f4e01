import math

import pytest
import torch

from ssl_core.loss.koleo import KoLeoLoss


def _reference(x, eps=1e-8):
    rows = []
    for r in x.tolist():
        norm = max(math.sqrt(sum(v * v for v in r)), eps)
        rows.append([v / norm for v in r])
    total = 0.0
    for i, a in enumerate(rows):
        best = min(
            math.sqrt(sum((a[d] - b[d] + eps) ** 2 for d in range(len(a))))
            for j, b in enumerate(rows)
            if j != i
        )
        total += -math.log(best + eps)
    return total / len(rows)


def test_matches_brute_force_nearest_neighbour():
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = KoLeoLoss()(x)
    assert out.item() == pytest.approx(_reference(x), rel=1e-5)


def test_scale_invariant_and_spread_lower():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 8, generator=g)
    loss = KoLeoLoss()
    assert loss(x).item() == pytest.approx(loss(3.0 * x).item(), rel=1e-5)
    clustered = torch.randn(1, 8, generator=g) + 0.01 * torch.randn(16, 8, generator=g)
    assert loss(clustered) > loss(x)


def test_grad_and_duplicates_finite():
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    x = torch.cat([x, x[:1]]).requires_grad_(True)  # exact duplicate -> distance ~0
    out = KoLeoLoss()(x)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
