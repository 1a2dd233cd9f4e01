"""The collapse monitor's teacher entropies equal their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_core.train.step import softmax_entropies


@pytest.mark.parametrize("spread", [0.05, 3.0])  # near uniform; sharp (probabilities underflow)
def test_entropies_match_the_definition(spread: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 500, generator=g, dtype=torch.float64) * spread).to(torch.bfloat16)
    h_sample, h_mean = softmax_entropies(logits, 0.04)
    p = torch.softmax(logits.double() / 0.04, dim=-1)
    plogp = torch.where(p > 0, p * p.log(), torch.zeros_like(p))
    assert h_sample == pytest.approx(float(-plogp.sum(-1).mean()), rel=1e-4, abs=1e-5)
    pm = p.mean(0)
    assert h_mean == pytest.approx(float(-(pm * pm.clamp_min(1e-300).log()).sum()), rel=1e-4)
    assert 0.0 <= h_sample <= h_mean <= math.log(500) + 1e-6  # concavity: H(mean) >= mean H
