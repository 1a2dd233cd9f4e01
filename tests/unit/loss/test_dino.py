import math

import pytest
import torch

from ssl_core.loss.dino import DINOLoss


def _reference(student, teacher, tau_s):
    """Explicit loops over pairs, samples and prototypes."""
    total, n_pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            pair = 0.0
            for b in range(s.shape[0]):
                logits = [float(v) / tau_s for v in s[b]]
                m = max(logits)
                log_z = m + math.log(sum(math.exp(v - m) for v in logits))
                pair += -sum(float(t[b, k]) * (logits[k] - log_z) for k in range(len(logits)))
            total += pair / s.shape[0]
            n_pairs += 1
    return total / n_pairs, n_pairs


def test_matches_double_loop_2_globals_3_locals():
    g = torch.Generator().manual_seed(0)
    B, K = 4, 7
    student = [torch.randn(B, K, generator=g) for _ in range(5)]
    teacher = [torch.softmax(torch.randn(B, K, generator=g) / 0.3, -1) for _ in range(2)]
    ref, n_pairs = _reference(student, teacher, 0.1)
    assert n_pairs == 2 * 5 - 2
    out = DINOLoss(student_temp=0.1)(student, teacher)
    assert out.shape == ()
    assert out.item() == pytest.approx(ref, rel=1e-5)


def test_pair_exclusion_is_same_index():
    # if teacher i == softmax(student i) the excluded self pairs would be the cheapest; swapping
    # global student crops must change the loss, proving the exclusion is index-based
    g = torch.Generator().manual_seed(1)
    student = [torch.randn(3, 5, generator=g) for _ in range(5)]
    teacher = [torch.softmax(torch.randn(3, 5, generator=g), -1) for _ in range(2)]
    loss = DINOLoss()
    swapped = [student[1], student[0], *student[2:]]
    assert loss(student, teacher).item() == pytest.approx(
        _reference(student, teacher, 0.1)[0], rel=1e-5
    )
    assert loss(student, teacher).item() != pytest.approx(loss(swapped, teacher).item(), rel=1e-3)


def test_gradient_flows_to_student_only():
    g = torch.Generator().manual_seed(2)
    student = [torch.randn(2, 4, generator=g, requires_grad=True) for _ in range(3)]
    teacher = [torch.softmax(torch.randn(2, 4, generator=g), -1) for _ in range(2)]
    DINOLoss()(student, teacher, student_temp=0.2).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
