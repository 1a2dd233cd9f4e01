"""Shared by the loss tests and the training-step tests: autograd's composite of the soft
cross-entropy that :mod:`ssl_core.loss.soft_ce` writes out."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def composite_soft_ce(logits, temp, targets, groups):  # noqa: ANN001, ANN201
    """sum_r w_r H(T_r, softmax(z_r / temp)) with every target row spelled out."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16: as the library
    total = logits.new_zeros(())
    for grp in groups:
        lsm = F.log_softmax(logits[grp.start : grp.stop] / temp, dim=-1)
        t = targets[grp.target]
        t_rows = t.repeat(lsm.shape[0] // t.shape[0], 1)
        w = (
            grp.weight
            if torch.is_tensor(grp.weight)
            else torch.full((lsm.shape[0],), grp.weight, dtype=lsm.dtype)
        )
        total = total - ((t_rows * lsm).sum(-1) * w.to(lsm)).sum()
    return total
