"""DINO + iBOT loss, forward + backward, at a 65,536-prototype head (issue #20), three forms:

* ``per_pair``: the losses before issue #20's loss change, autograd through a log-softmax per
  student crop and one product + sum per (teacher, student) pair
  (``train_profile._per_pair_dino`` / ``_composite_ibot``, what ``--disable soft_ce_*`` puts back);
* ``logsumexp``: one soft cross-entropy per student crop against its summed targets in the
  ``logsumexp(z) * sum(t) - sum(t * z)`` form, through autograd (tried, not kept);
* ``written_out``: the library's losses now (:mod:`ssl_core.loss.soft_ce`: summed targets,
  shared targets broadcast, closed-form backward in place).

Shapes of issue #20's ViT-S/14 comparison: batch 64, 2 global + 4 local student crops, 2 teacher
crops, ``--masked`` masked patch tokens for iBOT (~300 per step). Student logits are bf16, as
the head gives them under autocast; the teacher targets are near uniform, as in the measured
run's first steps (teacher logits' std 0.063 at temperature 0.04). The process keeps freed
memory as training does (``ssl_core/utils/malloc.py``). The forms run alternately in one process
(``--rounds`` x ``--reps``, the order rotated every round); their values must agree (asserted).

Usage::

    .venv/bin/python benchmarks/loss_kernels.py

Results: ``benchmarks/results/loss_kernels.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI runs training (ssl_core/cli.py)
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_profile import _composite_ibot, _per_pair_dino  # noqa: E402

from ssl_core.loss.dino import DINOLoss  # noqa: E402
from ssl_core.loss.ibot import IBOTPatchLoss, masks_weight_from  # noqa: E402
from ssl_core.utils.malloc import keep_freed_memory  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FORMS = ("per_pair", "logsumexp", "written_out")


def _logsumexp_ce(logits: torch.Tensor, targets: torch.Tensor, temp: float) -> torch.Tensor:
    """Per row ``-sum_k t_k log_softmax(z)_k`` as ``logsumexp(z) sum_k t_k - sum_k t_k z_k``."""
    z = logits.float() / temp
    return torch.logsumexp(z, dim=-1) * targets.sum(-1) - (targets * z).sum(-1)


def _logsumexp_loss(s_all, teacher, s_ibot, t_ibot, masks, tau):  # noqa: ANN001, ANN202
    t_all = torch.stack(teacher).sum(0)
    student = s_all.chunk(s_all.shape[0] // teacher[0].shape[0])
    n_pairs = len(student) * len(teacher) - len(teacher)
    dino = sum(_logsumexp_ce(s, t_all - teacher[j] if j < len(teacher) else t_all, tau).mean()
               for j, s in enumerate(student)) / n_pairs  # fmt: skip
    ibot = (_logsumexp_ce(s_ibot, t_ibot, tau) * masks_weight_from(masks)).sum() / masks.shape[0]
    return dino + ibot


def inputs(batch: int, k: int, masked: int, seed: int = 0):  # noqa: ANN201
    g = torch.Generator().manual_seed(seed)

    def student(rows: int) -> torch.Tensor:
        return (0.06 * torch.randn(rows, k, generator=g)).to(torch.bfloat16).requires_grad_()

    def teacher(rows: int) -> torch.Tensor:
        return torch.softmax(0.063 * torch.randn(rows, k, generator=g) / 0.04, -1)

    masks = torch.zeros(2 * batch, 16, dtype=torch.bool)
    masks.view(-1)[torch.randperm(masks.numel(), generator=g)[:masked]] = True
    return (
        student(6 * batch),
        [teacher(batch), teacher(batch)],
        student(masked),
        teacher(masked),
        masks,
    )


def run(form: str, x, tau: float = 0.1) -> float:  # noqa: ANN001
    s_all, teacher, s_ibot, t_ibot, masks = x
    s_all.grad = s_ibot.grad = None
    if form == "per_pair":
        dino, ibot = DINOLoss(tau), IBOTPatchLoss(tau)
        loss = _per_pair_dino(dino, s_all, teacher) + _composite_ibot(ibot, s_ibot, t_ibot, masks)
    elif form == "logsumexp":
        loss = _logsumexp_loss(s_all, teacher, s_ibot, t_ibot, masks, tau)
    else:
        loss = DINOLoss(tau)(s_all, teacher) + IBOTPatchLoss(tau)(s_ibot, t_ibot, masks)
    loss.backward()
    return float(loss.detach())


def render_md(res: dict) -> str:
    med = res["median_s"]
    lines = ["# DINO + iBOT loss kernels (CPU)", "",
             f"`{res['command']}` ({res['date']}, {res['threads']} threads): forward + backward "
             "of both losses at issue #20's shapes (docstring of `benchmarks/loss_kernels.py`); "
             f"{res['rounds']} rounds x {res['reps']} calls, alternating; median seconds per call.",
             "", "| form | s per call (median) | per round | vs per_pair |", "|---|---|---|---|"]  # fmt: skip
    for f in FORMS:
        per = ", ".join(f"{t:.3f}" for t in res["s_per_call"][f])
        lines.append(f"| {f} | {med[f]:.3f} | {per} | {med['per_pair'] / med[f]:.2f}x |")
    lines += ["", f"Values (must agree): {res['values']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prototypes", type=int, default=65536)
    ap.add_argument("--masked", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    keep_freed_memory()
    x = inputs(args.batch, args.prototypes, args.masked)
    values = {f: run(f, x) for f in FORMS}  # warm-up, and the values
    for f in FORMS:
        assert abs(values[f] - values["per_pair"]) <= 1e-4 * abs(values["per_pair"]), values
    times: dict[str, list[float]] = {f: [] for f in FORMS}
    for r in range(args.rounds):
        for f in FORMS[r % 3 :] + FORMS[: r % 3]:
            t0 = time.perf_counter()
            for _ in range(args.reps):
                run(f, x)
            times[f].append((time.perf_counter() - t0) / args.reps)
    res = {"command": "python benchmarks/loss_kernels.py " + " ".join(sys.argv[1:]),
           "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "threads": torch.get_num_threads(), "rounds": args.rounds, "reps": args.reps,
           "values": values, "s_per_call": times,
           "median_s": {f: statistics.median(ts) for f, ts in times.items()}}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loss_kernels.json").write_text(json.dumps(res, indent=1))
    (args.out / "loss_kernels.md").write_text(render_md(res))
    print(render_md(res))


if __name__ == "__main__":
    main()
