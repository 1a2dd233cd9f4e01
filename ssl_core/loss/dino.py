"""DINO image-level self-distillation loss (Caron et al. 2021, Eq. 3; DINOv2, Oquab et al. 2023, §4).

    L = 1/|P| * sum_{(i, j) in P}  H(P_t(x_i), P_s(x_j)),   H(a, b) = -sum_k a_k log b_k

with ``P_s(x) = softmax(g_s(x) / tau_s)`` (tau_s = 0.1) and the teacher targets ``P_t`` already
centred and sharpened (see ``ssl_core.loss.centering``). Each H is averaged over the batch.

Pair convention: the student crop list is ``[global_0, global_1, ..., local_0, local_1, ...]`` and
the teacher list is ``[global_0, global_1, ...]`` (teachers see global crops only). Student crop
``j`` is paired with teacher crop ``i`` for every ``i, j`` except ``j == i`` (same view), so with
2 globals + L locals there are ``2 * (2 + L) - 2`` pairs.

Computed as one soft cross-entropy per student crop against the sum of its teachers' targets
(H is linear in its first argument), forward and backward written out in
:mod:`ssl_core.loss.soft_ce`: the same values to float rounding, fewer passes over the
(crops x B, K) scores.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_core.loss.soft_ce import RowGroup, soft_cross_entropy

__all__ = ["DINOLoss"]


class DINOLoss(nn.Module):
    """Cross-entropy between teacher global-crop targets and student predictions on all crops."""

    def __init__(self, student_temp: float = 0.1) -> None:
        super().__init__()
        self.student_temp = student_temp

    def forward(
        self,
        student_logits: torch.Tensor | list[torch.Tensor],
        teacher_probs: list[torch.Tensor],
        student_temp: float | None = None,
    ) -> torch.Tensor:
        """Args:
        student_logits: (n_crops B, K) head outputs, crop-major, globals first (or one (B, K)
            tensor per crop).
        teacher_probs: one (B, K) probability tensor per teacher global crop.
        student_temp: overrides the temperature given at construction.

        Returns the scalar loss averaged over batch and over the ``(i, j), j != i`` pairs.
        """
        tau_s = self.student_temp if student_temp is None else student_temp
        if isinstance(student_logits, list):
            student_logits = torch.cat(student_logits)
        n_g, b = len(teacher_probs), teacher_probs[0].shape[0]
        n_crops = student_logits.shape[0] // b
        if n_g > n_crops:
            raise ValueError("more teacher crops than student crops")
        n_pairs = n_crops * n_g - n_g
        if n_pairs == 0:
            raise ValueError("no (teacher, student) pairs: need >1 crop")
        w = 1.0 / (b * n_pairs)  # each pair's H is a batch mean; the loss their mean
        targets = [_sum_except(teacher_probs, j) for j in range(n_g)]
        groups = [RowGroup(j * b, (j + 1) * b, j, w) for j in range(n_g)]
        if n_crops > n_g:  # every local crop meets every teacher crop
            targets.append(_sum_except(teacher_probs, None))
            groups.append(RowGroup(n_g * b, n_crops * b, n_g, w))
        return soft_cross_entropy(student_logits, tau_s, tuple(targets), tuple(groups))


def _sum_except(probs: list[torch.Tensor], skip: int | None) -> torch.Tensor:
    """Sum of the teacher targets other than number ``skip`` (float32; the tensor itself when
    only one)."""
    kept = [p.float() for i, p in enumerate(probs) if i != skip]
    if not kept:  # a single global crop meets no other teacher crop
        return torch.zeros_like(probs[0], dtype=torch.float32)
    return sum(kept[1:], kept[0])
