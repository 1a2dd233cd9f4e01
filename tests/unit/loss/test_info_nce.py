import math

import pytest
import torch

from ssl_core.loss.info_nce import InfoNCELoss


def _reference(a, b, tau):
    """Both directions of -log(exp(s_ii) / sum_j exp(s_ij)), s = cos / tau, by loops."""

    def unit(rows):
        return [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in rows]

    za, zb = unit(a.tolist()), unit(b.tolist())
    n = len(za)
    s = [[sum(x * y for x, y in zip(za[i], zb[j], strict=True)) / tau for j in range(n)]
         for i in range(n)]  # fmt: skip
    a_to_b = sum(-s[i][i] + math.log(sum(math.exp(s[i][j]) for j in range(n))) for i in range(n))
    b_to_a = sum(-s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(n))) for j in range(n))
    return 0.5 * (a_to_b + b_to_a) / n


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_matches_direct_formula(tau):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 5, generator=g, dtype=torch.float64)
    b = torch.randn(7, 5, generator=g, dtype=torch.float64)
    assert InfoNCELoss(tau)(a, b).item() == pytest.approx(_reference(a, b, tau), rel=1e-5)


def test_aligned_views_score_lower_than_shuffled_and_gradients_flow():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(16, 8, generator=g, requires_grad=True)
    loss_fn = InfoNCELoss(0.2)
    aligned = loss_fn(a, a.detach() + 0.01 * torch.randn(16, 8, generator=g))
    shuffled = loss_fn(a, a.detach()[torch.randperm(16, generator=g)])
    assert aligned < 0.5 < shuffled
    shuffled.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        InfoNCELoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="one shape"):
        InfoNCELoss()(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)
