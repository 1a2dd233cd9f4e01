"""Teacher centring for DINO / iBOT targets.

Two variants from DINOv2 (Oquab et al. 2023, §4 "Sinkhorn-Knopp centering"; official
``DINOLoss.sinkhorn_knopp_teacher`` / ``softmax_center_teacher``):

* Sinkhorn-Knopp (SwAV, Caron et al. 2020, §3.1): with ``Q = exp(t / tau_t)^T`` (K x B), alternately
  normalise rows (each prototype gets mass 1/K) and columns (each sample gets mass 1/B) for 3
  iterations, then rescale so each sample's column is a probability vector.
* Softmax centring (DINO, Caron et al. 2021, Eq. 4): ``P_t = softmax((t - c) / tau_t)`` with the
  centre updated by EMA ``c <- m c + (1 - m) mean_b t_b`` (m = 0.9).

Both are all-reduce aware: when ``torch.distributed`` is initialised, the sums run over the global
batch, so results equal a single-process run on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ssl_core.utils.distributed import distributed_on

__all__ = ["SoftmaxCenter", "sinkhorn_knopp"]


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3
) -> torch.Tensor:
    """Sinkhorn-Knopp teacher targets. ``teacher_logits``: (B, K) -> probabilities (B, K), rows sum to 1.

    ``B`` is the global batch (local B x world size) under torch.distributed. The logits are shifted
    by their (global) maximum before ``exp``; the first global normalisation makes this an identity
    on the result, it only avoids overflow for small temperatures.
    """
    t = teacher_logits.float()
    world_size = dist.get_world_size() if distributed_on() else 1
    t_max = t.max()
    if distributed_on():
        dist.all_reduce(t_max, op=dist.ReduceOp.MAX)
    Q = torch.exp((t - t_max) / teacher_temp).t()  # K x B, notation of the SwAV paper
    B = Q.shape[1] * world_size  # number of samples to assign
    K = Q.shape[0]  # number of prototypes

    # make the matrix sum to 1
    sum_Q = Q.sum()
    if distributed_on():
        dist.all_reduce(sum_Q)
    Q /= sum_Q

    for _ in range(n_iterations):
        # rows: total weight per prototype must be 1/K
        sum_of_rows = Q.sum(dim=1, keepdim=True)
        if distributed_on():
            dist.all_reduce(sum_of_rows)
        Q /= sum_of_rows
        Q /= K
        # columns: total weight per sample must be 1/B
        Q /= Q.sum(dim=0, keepdim=True)
        Q /= B

    Q *= B  # columns sum to 1 so that Q is an assignment
    return Q.t()


class SoftmaxCenter(nn.Module):
    """DINO softmax centring with an EMA centre ``c`` of shape (1, K) held in a buffer.

    Usage per step: ``p_t = center.softmax_center_teacher(t, temp)`` then ``center.update_center(t)``
    (the centre used for step n is computed from the teacher outputs of steps < n, as upstream).
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def softmax_center_teacher(self, logits: torch.Tensor, temp: float) -> torch.Tensor:
        """P_t = softmax((t - c) / tau_t) over the last dim. ``logits``: (..., K)."""
        # the float32 centre promotes bf16 logits: cast and centre in one pass, then in place
        return torch.softmax(torch.sub(logits, self.center).div_(temp), dim=-1)

    @torch.no_grad()
    def update_center(self, logits: torch.Tensor) -> None:
        """c <- m c + (1 - m) * mean over the (global) batch of ``logits`` (any leading dims, K last)."""
        flat = logits.detach().reshape(-1, logits.shape[-1])
        batch_sum = flat.sum(dim=0, keepdim=True, dtype=torch.float32)  # no float32 copy first
        n = torch.tensor(float(flat.shape[0]), device=flat.device)
        if distributed_on():
            dist.all_reduce(batch_sum)
            dist.all_reduce(n)
        batch_center = batch_sum / n
        self.center.mul_(self.momentum).add_(batch_center * (1.0 - self.momentum))
