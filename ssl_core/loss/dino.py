"""DINO image-level self-distillation loss (Caron et al. 2021, Eq. 3; DINOv2, Oquab et al. 2023, §4).

    L = 1/|P| * sum_{(i, j) in P}  H(P_t(x_i), P_s(x_j)),   H(a, b) = -sum_k a_k log b_k

with ``P_s(x) = softmax(g_s(x) / tau_s)`` (tau_s = 0.1) and the teacher targets ``P_t`` already
centred and sharpened (see ``ssl_core.loss.centering``). Each H is averaged over the batch.

Pair convention: the student crop list is ``[global_0, global_1, ..., local_0, local_1, ...]`` and
the teacher list is ``[global_0, global_1, ...]`` (teachers see global crops only). Student crop
``j`` is paired with teacher crop ``i`` for every ``i, j`` except ``j == i`` (same view), so with
2 globals + L locals there are ``2 * (2 + L) - 2`` pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOLoss"]


class DINOLoss(nn.Module):
    """Cross-entropy between teacher global-crop targets and student predictions on all crops."""

    def __init__(self, student_temp: float = 0.1) -> None:
        super().__init__()
        self.student_temp = student_temp

    def forward(
        self,
        student_logits: list[torch.Tensor],
        teacher_probs: list[torch.Tensor],
        student_temp: float | None = None,
    ) -> torch.Tensor:
        """Args:
        student_logits: one (B, K) tensor of head outputs per student crop, globals first.
        teacher_probs: one (B, K) probability tensor per teacher global crop.
        student_temp: overrides the temperature given at construction.

        Returns the scalar loss averaged over batch and over the ``(i, j), j != i`` pairs.
        """
        tau_s = self.student_temp if student_temp is None else student_temp
        if len(teacher_probs) > len(student_logits):
            raise ValueError("more teacher crops than student crops")
        total = student_logits[0].new_zeros((), dtype=torch.float32)
        n_pairs = 0
        for j, s in enumerate(student_logits):
            log_p_s = F.log_softmax(s.float() / tau_s, dim=-1)  # log P_s(x_j)
            for i, p_t in enumerate(teacher_probs):
                if i == j:  # identical view: skip
                    continue
                total = total - (p_t.float() * log_p_s).sum(dim=-1).mean()
                n_pairs += 1
        if n_pairs == 0:
            raise ValueError("no (teacher, student) pairs: need >1 crop")
        return total / n_pairs
