"""iBOT masked-patch loss (Zhou et al. 2022, "iBOT", Eq. 2; DINOv2, Oquab et al. 2023, §4;
official ``iBOTPatchLoss.forward_masked``).

For image ``b`` with mask ``m_b`` over its N patches, the student sees the masked view and predicts
the teacher's (unmasked) patch distributions on the masked positions:

    L = 1/B * sum_b  1/|m_b| * sum_{n: m_bn = 1}  H(P_t(u_bn), P_s(\\hat u_bn))

``H(a, b) = -sum_k a_k log b_k`` and ``P_s = softmax(s / tau_s)``. Images with no masked patch
contribute 0 but still count in ``B`` (as upstream, which divides by ``masks.shape[0]``).

Signature (one, the upstream "flat" one): only the masked tokens go through the head, so the loss
takes the flat (M, K) student logits / teacher probs of the masked tokens, in the row-major order of
``masks.nonzero()`` (i.e. ``x[masks]`` for ``x`` of shape (B, N, ...)), plus the (B, N) bool mask.
Forward and backward are written out in :mod:`ssl_core.loss.soft_ce` (same values).
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_core.loss.soft_ce import RowGroup, soft_cross_entropy

__all__ = ["IBOTPatchLoss", "masks_weight_from"]


def masks_weight_from(masks: torch.Tensor) -> torch.Tensor:
    """Per-masked-token weight 1/|m_b| (M,), in ``masks.nonzero()`` order. ``masks``: (B, N) bool."""
    per_image = 1.0 / masks.sum(dim=-1).clamp(min=1).float()  # (B,)
    return per_image.unsqueeze(-1).expand_as(masks)[masks]


class IBOTPatchLoss(nn.Module):
    """Masked patch cross-entropy, averaged per image over its masked patches then over images."""

    def __init__(self, student_temp: float = 0.1) -> None:
        super().__init__()
        self.student_temp = student_temp

    def forward(
        self,
        student_logits_masked: torch.Tensor,
        teacher_probs_masked: torch.Tensor,
        masks: torch.Tensor,
        masks_weight: torch.Tensor | None = None,
        student_temp: float | None = None,
    ) -> torch.Tensor:
        """Args:
        student_logits_masked: (M, K) student head outputs on the M masked tokens.
        teacher_probs_masked: (M, K) teacher targets on the same tokens (centred, sharpened).
        masks: (B, N) bool, ``M == masks.sum()``; token order = ``masks.nonzero()`` order.
        masks_weight: optional precomputed (M,) weights (default ``masks_weight_from(masks)``,
            precomputed by the collate upstream).
        student_temp: overrides the temperature given at construction.
        """
        tau_s = self.student_temp if student_temp is None else student_temp
        n_masked = int(masks.sum())
        if student_logits_masked.shape[0] != n_masked or teacher_probs_masked.shape[0] != n_masked:
            raise ValueError(
                f"expected {n_masked} masked tokens, got {student_logits_masked.shape[0]} "
                f"student / {teacher_probs_masked.shape[0]} teacher"
            )
        if masks_weight is None:
            masks_weight = masks_weight_from(masks)
        if n_masked == 0:
            return student_logits_masked.float().sum() * 0.0
        weight = masks_weight.float() / masks.shape[0]  # (M,): 1 / (|m_b| B)
        group = RowGroup(0, n_masked, 0, weight)
        return soft_cross_entropy(student_logits_masked, tau_s, (teacher_probs_masked,), (group,))
