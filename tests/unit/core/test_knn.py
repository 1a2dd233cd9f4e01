import torch

from ssl_core.eval.knn import knn_accuracy


def test_knn_separable_and_chance():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=g) * 5
    yb = torch.arange(300) % 3
    yq = torch.arange(90) % 3
    bank = centers[yb] + torch.randn(300, 16, generator=g)
    query = centers[yq] + torch.randn(90, 16, generator=g)
    assert knn_accuracy(bank, yb, query, yq, ks=(10,))[10] == 1.0
    rand = knn_accuracy(
        torch.randn(300, 16, generator=g), yb, torch.randn(90, 16, generator=g), yq, ks=(10,)
    )
    assert rand[10] < 0.6


def test_knn_weighting_prefers_close_neighbours():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.05, 1.0]])
    labels = torch.tensor([0, 1, 1])
    q = torch.tensor([[1.0, 0.01]])
    # two far votes for class 1 lose against one very close vote for class 0 at T=0.07
    assert knn_accuracy(bank, labels, q, torch.tensor([0]), ks=(3,), temperature=0.07)[3] == 1.0
