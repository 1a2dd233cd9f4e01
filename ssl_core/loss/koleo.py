"""KoLeo regulariser (Sablayrolles et al. 2019, "Spreading vectors for similarity search", Eq. 9;
DINOv2, Oquab et al. 2023, §4 "KoLeo regularizer"; official ``KoLeoLoss``).

From the Kozachenko-Leonenko differential-entropy estimator: for l2-normalised features x_1..x_n,

    L_koleo = -1/n * sum_i log(d_{n,i} + eps),   d_{n,i} = min_{j != i} ||x_i - x_j||

which pushes each feature away from its nearest neighbour in the batch (uniform spread on the
sphere). DINOv2 applies it with weight 0.1 to the student CLS tokens of each global crop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KoLeoLoss"]


class KoLeoLoss(nn.Module):
    """Kozachenko-Leonenko nearest-neighbour entropy loss on a (n, D) batch (n >= 2)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        # ||x_i - x_j + eps||_2 as upstream (nn.PairwiseDistance adds eps to the difference)
        self.pdist = nn.PairwiseDistance(p=2, eps=eps)

    @staticmethod
    @torch.no_grad()
    def nearest_neighbours(x: torch.Tensor) -> torch.Tensor:
        """Index of each row's nearest other row by max dot product (x l2-normalised). (n, D) -> (n,)."""
        dots = x @ x.t()
        dots.fill_diagonal_(-2.0)  # cosine >= -1: never pick self
        return dots.argmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            raise ValueError("KoLeo needs at least 2 samples")
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), p=2, dim=-1, eps=self.eps)
            nn_idx = self.nearest_neighbours(x)
            d = self.pdist(x, x[nn_idx])  # (n,) distance to nearest neighbour
            return -torch.log(d + self.eps).mean()
