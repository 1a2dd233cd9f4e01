"""Soft-target cross-entropy at prototype width with its backward written out (issue #20).

The DINO and iBOT terms are sums of ``w_r * H(T_r, softmax(z_r / tau))`` over student rows
``r``, ``H(a, b) = -sum_k a_k log b_k``, with K = 65,536 prototypes in the DINOv2 recipe. On a
CPU each elementwise pass over such a (rows, K) tensor costs about as much as a matrix product
of the backbone, and autograd's composite (cast, divide, log-softmax, one product and sum per
teacher/student pair; in backward the same again plus the concatenation of the crops' grads)
makes ~20 of them. This module makes ~8, with the same mathematics:

* DINO's pairs are folded per student crop: ``sum_{i != j} H(t_i, s_j) = H(sum_{i != j} t_i,
  s_j)`` (H is linear in its first argument), so each student row meets one target row;
* rows sharing a target (all local crops meet every teacher global) use it by broadcasting,
  never a copy;
* backward is the closed form ``dL/dz_r = w_r (sum_k T_rk * softmax(z_r) - T_r)``, computed in
  place on the saved log-probabilities' exponential, and written once into the logits' dtype.

Values equal the composite to float rounding (``tests/unit/loss/test_soft_ce.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RowGroup", "scaled_log_softmax", "soft_cross_entropy"]


@dataclass(frozen=True)
class RowGroup:
    """Rows ``start:stop`` of the logits, viewed as (G, B, K), against target (B, K) number
    ``target`` (broadcast over G). ``weight``: one float for every row, or a (B,) tensor of
    per-row weights (then G must be 1)."""

    start: int
    stop: int
    target: int
    weight: float | Tensor


class _SoftCE(torch.autograd.Function):
    """``sum_r w_r H(T_r, softmax(logits_r * inv_tau))`` over every :class:`RowGroup`."""

    @staticmethod
    def forward(ctx, logits: Tensor, inv_tau: float, targets: tuple[Tensor, ...],  # noqa: ANN001
                groups: tuple[RowGroup, ...]) -> Tensor:  # fmt: skip
        dtype = torch.promote_types(logits.dtype, torch.float32)  # bf16/fp16 -> fp32; fp64 stays
        total = torch.zeros((), dtype=dtype, device=logits.device)
        log_probs, weighted = [], []
        for grp in groups:
            t, w = _weighted_target(targets[grp.target].to(dtype), grp.weight)  # w t = w_r T_r
            lsm = scaled_log_softmax(logits[grp.start : grp.stop], inv_tau)
            for rows in lsm.view(-1, t.numel()):  # each (B, K) block of the group
                total = total - w * torch.dot(rows, t.view(-1))
            log_probs.append(lsm)
            weighted.append((t, w))
        ctx.save_for_backward(*log_probs)
        ctx.meta = (inv_tau, tuple(weighted), logits.shape, logits.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001, ANN205
        inv_tau, weighted, shape, dtype = ctx.meta
        grad = torch.empty(shape, dtype=dtype, device=grad_out.device)  # groups tile the rows
        c = float(grad_out) * inv_tau
        start = 0
        for lsm, (t, w) in zip(ctx.saved_tensors, weighted, strict=True):
            mass = t.sum(-1, keepdim=True)  # (B, 1): w_r sum_k T_rk, up to the factor w
            p = torch.exp(lsm).view(-1, *t.shape)  # (G, B, K), becomes the gradient in place
            p.mul_(mass * (c * w)).sub_(t, alpha=c * w)
            grad[start : start + lsm.shape[0]].copy_(p.view(-1, shape[-1]))
            start += lsm.shape[0]
        return grad, None, None, None


def _weighted_target(t: Tensor, weight: float | Tensor) -> tuple[Tensor, float]:
    """``(T', w)`` with ``w T'_r = w_r T_r``: per-row weights go into a new (B, K) tensor, one
    weight for every row stays a factor (no copy of the target)."""
    if isinstance(weight, Tensor):
        return t * weight.to(t.device, t.dtype).unsqueeze(-1), 1.0
    return t.contiguous(), float(weight)


def scaled_log_softmax(logits: Tensor, factor: float) -> Tensor:
    """``log_softmax(logits * factor)`` over the last dim in float32 (float64 stays): a (1,)
    float32 factor promotes a bf16 operand, so the cast and the scaling are one pass."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    scale = torch.full((1,), factor, dtype=dtype, device=logits.device)
    return torch.log_softmax(logits * scale, dim=-1)


def soft_cross_entropy(logits: Tensor, temp: float, targets: tuple[Tensor, ...],
                       groups: tuple[RowGroup, ...]) -> Tensor:  # fmt: skip
    """``sum over groups, rows r: w_r * H(T_r, softmax(logits_r / temp))`` (module docstring).

    Args:
        logits: (R, K) student scores, any float dtype (bf16 under autocast); computed in float32
            (float64 for float64 logits), the gradient comes back in the logits' dtype.
        temp: Student temperature.
        targets: (B, K) target rows (probabilities or sums of them), no gradient.
        groups: Which rows meet which target, and the rows' weights.
    """
    start = 0
    for grp in groups:
        rows = targets[grp.target].shape[0]
        if grp.start != start or grp.stop <= start or (grp.stop - start) % rows:
            raise ValueError(
                f"row groups must tile the logits' rows in order in blocks of the "
                f"target's {rows} rows; got {grp.start}:{grp.stop} after row {start}"
            )
        if isinstance(grp.weight, Tensor) and grp.stop - grp.start != rows:
            raise ValueError("per-row weights need one block of rows (G = 1)")
        start = grp.stop
    if start != logits.shape[0]:
        raise ValueError(f"row groups cover {start} of the {logits.shape[0]} logit rows")
    return _SoftCE.apply(logits, 1.0 / temp, tuple(t.detach() for t in targets), tuple(groups))
