"""Weighted kNN classification on L2-normalised features (DINO protocol).

Each query votes with its k nearest bank features (cosine similarity), weighted by
``exp(sim / T)``; T = 0.07 as in DINO/DINOv2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_accuracy(
    bank: torch.Tensor,  # (Nb, D)
    bank_labels: torch.Tensor,  # (Nb,)
    query: torch.Tensor,  # (Nq, D)
    query_labels: torch.Tensor,  # (Nq,)
    ks: Sequence[int] = (10, 20),
    temperature: float = 0.07,
    chunk: int = 1024,
) -> dict[int, float]:
    """Top-1 accuracy (0..1) for each k in ``ks``."""
    if len(bank) == 0 or len(query) == 0:
        raise ValueError("kNN needs a non-empty bank and query set")
    n_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    bank = F.normalize(bank.float(), dim=1)
    query = F.normalize(query.float(), dim=1)
    kmax = min(max(ks), len(bank))
    correct = dict.fromkeys(ks, 0)
    for s in range(0, len(query), chunk):
        q = query[s : s + chunk]
        sim, idx = (q @ bank.T).topk(kmax, dim=1)  # (B, kmax)
        weights = (sim / temperature).exp()
        neigh = bank_labels[idx]  # (B, kmax)
        for k in ks:
            kk = min(k, kmax)
            votes = torch.zeros(len(q), n_classes)
            votes.scatter_add_(1, neigh[:, :kk], weights[:, :kk])
            correct[k] += int((votes.argmax(1) == query_labels[s : s + chunk]).sum())
    return {k: correct[k] / len(query) for k in ks}
