"""DINO + iBOT loss, forward + backward, at a 65,536-prototype head: the library's losses
(a log-softmax per student crop, a product per (teacher, student) pair) vs a candidate tried for
issue #20 and not kept: one soft cross-entropy per student crop against its summed targets, in
the ``logsumexp(z) * sum(t) - sum(t * z)`` form that never materialises the log-probabilities.
Same values; measured no faster on this CPU (docs/training.md, training throughput).

Shapes of issue #20's ViT-S/14 comparison: batch 64, 2 global + 4 local student crops, 2 teacher
crops, ``--masked`` masked patch tokens for iBOT (the mean of masks on half the 128 global crops
at ratio 0.1-0.5 of 16 patches: ~300 per step). Both versions
run alternately in one process (``--rounds`` x ``--reps``), the order flipped every round; the
values must agree to float rounding (asserted).

Usage::

    .venv/bin/python benchmarks/loss_kernels.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI runs training (ssl_core/cli.py)
import torch  # noqa: E402

from ssl_core.loss.dino import DINOLoss  # noqa: E402
from ssl_core.loss.ibot import IBOTPatchLoss, masks_weight_from  # noqa: E402


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, temp: float) -> torch.Tensor:
    """Per row ``-sum_k t_k log_softmax(z)_k`` as ``logsumexp(z) sum_k t_k - sum_k t_k z_k``."""
    z = logits / temp
    return torch.logsumexp(z, dim=-1) * targets.sum(-1) - (targets * z).sum(-1)


def summed_target_dino(student: list[torch.Tensor], teacher: list[torch.Tensor], tau: float):
    """DINO over all (i != j) pairs as one soft cross-entropy per student crop j against
    ``sum_{i != j} P_t_i``."""
    t_all = torch.stack(teacher).sum(0)
    n_pairs = len(student) * len(teacher) - len(teacher)
    total = student[0].new_zeros(())
    for j, s in enumerate(student):
        targets = t_all - teacher[j] if j < len(teacher) else t_all
        total = total + soft_cross_entropy(s, targets, tau).mean()
    return total / n_pairs


def logsumexp_ibot(s: torch.Tensor, t: torch.Tensor, masks: torch.Tensor, tau: float):
    """iBOT with the same soft cross-entropy."""
    ce = soft_cross_entropy(s, t, tau)
    return (ce * masks_weight_from(masks)).sum() / masks.shape[0]


def inputs(batch: int, k: int, masked: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student = [torch.randn(batch, k, generator=g, requires_grad=True) for _ in range(6)]
    teacher = [torch.softmax(torch.randn(batch, k, generator=g) / 0.04, -1) for _ in range(2)]
    masks = torch.zeros(2 * batch, 16, dtype=torch.bool)
    masks.view(-1)[torch.randperm(masks.numel(), generator=g)[:masked]] = True
    s_ibot = torch.randn(masked, k, generator=g, requires_grad=True)
    t_ibot = torch.softmax(torch.randn(masked, k, generator=g) / 0.04, -1)
    return student, teacher, s_ibot, t_ibot, masks


def run(version: str, x, tau: float = 0.1) -> float:
    student, teacher, s_ibot, t_ibot, masks = x
    if version == "per_pair":  # the library's losses
        loss = DINOLoss(tau)(student, teacher) + IBOTPatchLoss(tau)(s_ibot, t_ibot, masks)
    else:
        loss = summed_target_dino(student, teacher, tau) + logsumexp_ibot(
            s_ibot, t_ibot, masks, tau
        )
    loss.backward()
    return float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prototypes", type=int, default=65536)
    ap.add_argument("--masked", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    x = inputs(args.batch, args.prototypes, args.masked)
    values = {v: run(v, x) for v in ("per_pair", "soft_ce")}  # warm-up, and the values
    assert abs(values["per_pair"] - values["soft_ce"]) <= 1e-4 * abs(values["per_pair"]), values
    times: dict[str, list[float]] = {"per_pair": [], "soft_ce": []}
    for r in range(args.rounds):
        for v in ("per_pair", "soft_ce") if r % 2 == 0 else ("soft_ce", "per_pair"):
            t0 = time.perf_counter()
            for _ in range(args.reps):
                run(v, x)
            times[v].append((time.perf_counter() - t0) / args.reps)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    print(json.dumps({"values": values, "s_per_call": times, "median_s": med,
                      "saves_s": med["per_pair"] - med["soft_ce"],
                      "threads": torch.get_num_threads()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
