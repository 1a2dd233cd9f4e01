"""InfoNCE contrastive loss (van den Oord et al. 2018, "CPC", Eq. 4; symmetric form as in SimCLR,
Chen et al. 2020, Eq. 1, and SplitMask's global term, El-Nouby et al. 2021, §3.2).

For two views ``a_i``, ``b_i`` of the same B images (l2-normalised, temperature tau), each view's
positive is the other view of its image and the other B - 1 images of the batch are negatives:

    s_ij = <a_i, b_j> / tau
    L = 1/2 * [ 1/B sum_i -log softmax_j(s_ij)[i]  +  1/B sum_j -log softmax_i(s_ij)[j] ]

(the second term is the same cross-entropy with the roles of ``a`` and ``b`` swapped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InfoNCELoss"]


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE between two aligned (B, D) batches (B >= 2), in float32.

    Args:
        temperature: tau (SplitMask and SimCLR-style defaults: 0.1-0.5; 0.2 here).
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a``, ``b``: (B, D), row i of each is a view of image i. Returns the scalar loss."""
        if a.shape != b.shape or a.dim() != 2:
            raise ValueError(f"expected two (B, D) tensors of one shape, got {a.shape} / {b.shape}")
        if a.shape[0] < 2:
            raise ValueError("InfoNCE needs at least 2 samples (one positive, >= 1 negative)")
        with torch.autocast(device_type=a.device.type, enabled=False):
            za = F.normalize(a.float(), dim=-1)
            zb = F.normalize(b.float(), dim=-1)
            logits = za @ zb.t() / self.temperature  # (B, B), positives on the diagonal
            target = torch.arange(a.shape[0], device=a.device)
            return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
