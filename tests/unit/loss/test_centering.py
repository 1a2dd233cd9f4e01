import numpy as np
import pytest
import torch

from ssl_core.loss.centering import SoftmaxCenter, sinkhorn_knopp


def _numpy_sk(logits, temp, n_it):
    q = np.exp(logits.astype(np.float64) / temp).T  # K x B
    k, b = q.shape
    q /= q.sum()
    for _ in range(n_it):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def test_sinkhorn_rows_are_probabilities_and_match_numpy():
    logits = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    p = sinkhorn_knopp(logits, teacher_temp=0.5, n_iterations=3)
    assert p.shape == (32, 8)
    assert torch.allclose(p.sum(-1), torch.ones(32), atol=1e-5)
    assert (p >= 0).all()
    np.testing.assert_allclose(p.numpy(), _numpy_sk(logits.numpy(), 0.5, 3), rtol=1e-4, atol=1e-7)


def test_sinkhorn_column_marginals_uniform():
    B, K = 64, 8
    # strongly imbalanced logits: prototype 0 preferred by everyone
    logits = torch.randn(B, K, generator=torch.Generator().manual_seed(1))
    logits[:, 0] += 2.0
    raw = torch.softmax(logits / 0.5, -1).sum(0)
    p3 = sinkhorn_knopp(logits, 0.5, 3).sum(0)
    p50 = sinkhorn_knopp(logits, 0.5, 50).sum(0)
    target = torch.full((K,), B / K)
    assert (p3 - target).abs().max() < 0.1 * (raw - target).abs().max()
    assert torch.allclose(p50, target, rtol=1e-3)


def test_sinkhorn_stable_for_small_temperature():
    # cosine-like logits with an offset: exp(t / 0.04) alone would overflow float32
    logits = 10 + torch.tanh(torch.randn(16, 8, generator=torch.Generator().manual_seed(2)))
    p = sinkhorn_knopp(logits, teacher_temp=0.04)
    assert torch.isfinite(p).all() and torch.allclose(p.sum(-1), torch.ones(16), atol=1e-5)


def test_softmax_center_ema_and_softmax():
    g = torch.Generator().manual_seed(3)
    c = SoftmaxCenter(5, momentum=0.9)
    assert torch.equal(c.center, torch.zeros(1, 5))
    expected = torch.zeros(1, 5)
    for _ in range(3):
        t = torch.randn(6, 5, generator=g)
        p = c.softmax_center_teacher(t, 0.07)
        assert torch.allclose(p, torch.softmax((t - expected) / 0.07, -1), atol=1e-6)
        c.update_center(t)
        expected = 0.9 * expected + 0.1 * t.mean(0, keepdim=True)
        assert torch.allclose(c.center, expected, atol=1e-6)
    assert "center" in c.state_dict()


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_softmax_center_momentum_edges(momentum):
    c = SoftmaxCenter(3, momentum=momentum)
    t = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    c.update_center(t)
    want = torch.zeros(1, 3) if momentum == 1.0 else torch.full((1, 3), 2.0)
    assert torch.allclose(c.center, want)
