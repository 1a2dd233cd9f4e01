"""Where a training step's time goes on CPU (issue #20, item 1).

Runs the project's real training loop (:class:`ssl_core.train.trainer.Trainer`: data loading,
multi-crop augmentation, teacher and student forwards, Sinkhorn-Knopp, losses, backward,
clipping, AdamW, EMA) on a folder of images, and splits each step's wall time by the
``sslops.*`` :func:`torch.profiler.record_function` ranges that ``train_step`` and
``objectives._multicrop`` open (augment, teacher_forward, student_forward, teacher_targets,
losses, backward, clip, optimizer, ema; the rest of the step is "other"), plus the time the
loop waits for the next batch (data loading: decode + resize + collate).

Phase times are wall-clock sums of the ranges' CPU time (``cpu_time_total`` of the range
events, outermost only), averaged over the profiled steps; the first ``--warmup`` steps are run
unprofiled. Presets (``--preset``):

* ``demo``: ``params.yaml``'s ``train:`` section as it is (the demo's teacher);
* ``vits14``: the setting of issue #20's comparison with lightly-train
  (``train_throughput.MATCHED``: ViT-S/14, 4 registers, 65,536 prototypes, 2 x 56 px globals +
  4 x 28 px locals, batch 64, ...; the rest of the recipe from ``params.yaml``).

Usage::

    .venv/bin/python benchmarks/train_profile.py --images /tmp/fm10k --preset vits14
    .venv/bin/python benchmarks/train_profile.py --images /tmp/fm10k --preset demo --tag after

Results: ``benchmarks/results/train_profile.json`` (runs appended, keyed by preset and tag) and
``train_profile.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI runs training (ssl_core/cli.py)
import kornia.augmentation as KA
import torch  # noqa: E402
from kornia.enhance import adjust_hue
from torch.profiler import ProfilerActivity, profile

import ssl_core.data.augment as augment_mod
import ssl_core.loss.dino as dino_mod
import ssl_core.loss.ibot as ibot_mod
import ssl_core.models.block as block_mod
import ssl_core.train.step as step_mod
import ssl_core.train.trainer as trainer_mod
from ssl_core.data.color import adjust_hue_fast
from ssl_core.models.patch_embed import PatchEmbed
from ssl_core.train.precision import resolve_precision
from ssl_core.train.trainer import Trainer
from ssl_core.utils.malloc import ENV_SWITCH

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import build_trainer, recipe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = (
    "augment",
    "teacher_forward",
    "student_forward",
    "teacher_targets",
    "losses",
    "backward",
    "clip",
    "optimizer",
    "ema",
)


def _getitem_drop_path(x, residual_func, drop_rate):  # noqa: ANN001, ANN202
    """``drop_add_residual_stochastic_depth`` before issue #20: the branch input gathered with
    ``x[index]`` (its backward an accumulating ``index_put``)."""
    b = x.shape[0]
    subset = max(int(b * (1.0 - drop_rate)), 1)
    index = torch.randperm(b, device=x.device)[:subset]
    residual = residual_func(x[index], index)
    out = torch.index_add(x.flatten(1), 0, index, residual.to(x.dtype).flatten(1), alpha=b / subset)
    return out.view_as(x)


@contextlib.contextmanager
def _never_off(model, off):  # noqa: ANN001, ANN202
    yield


def _per_pair_dino(self, student_logits, teacher_probs, student_temp=None):  # noqa: ANN001, ANN202
    """``DINOLoss.forward`` before the written-out soft cross-entropy: autograd through a
    log-softmax per student crop and a product + sum per (teacher, student) pair."""
    tau_s = self.student_temp if student_temp is None else student_temp
    b = teacher_probs[0].shape[0]
    total, n_pairs = student_logits.new_zeros((), dtype=torch.float32), 0
    for j, s in enumerate(student_logits.chunk(student_logits.shape[0] // b)):
        log_p_s = torch.nn.functional.log_softmax(s.float() / tau_s, dim=-1)
        for i, p_t in enumerate(teacher_probs):
            if i != j:
                total, n_pairs = total - (p_t.float() * log_p_s).sum(dim=-1).mean(), n_pairs + 1
    return total / n_pairs


def _composite_ibot(self, s, t, masks, masks_weight=None, student_temp=None):  # noqa: ANN001, ANN202
    """``IBOTPatchLoss.forward`` before it: autograd through log-softmax, product and sum."""
    tau_s = self.student_temp if student_temp is None else student_temp
    w = ibot_mod.masks_weight_from(masks) if masks_weight is None else masks_weight
    ce = -(t.float() * torch.nn.functional.log_softmax(s.float() / tau_s, dim=-1)).sum(dim=-1)
    return (ce * w.to(ce)).sum() / masks.shape[0]


def _conv_patch_embed(self, x):  # noqa: ANN001, ANN202
    """``PatchEmbed.forward`` before it: the strided convolution."""
    return self.proj(x).flatten(2).transpose(1, 2)


SPEED_PATHS = {
    "fused_adamw": (trainer_mod, "adamw_implementation", lambda _p: {"foreach": False}),
    "frozen_grad_skip": (step_mod, "last_layer_grads_off", _never_off),
    "index_select_drop_path": (block_mod, "drop_add_residual_stochastic_depth", _getitem_drop_path),
    "fast_hue": (augment_mod, "ColorJitter", KA.ColorJitter),
    "soft_ce_dino": (dino_mod.DINOLoss, "forward", _per_pair_dino),
    "soft_ce_ibot": (ibot_mod.IBOTPatchLoss, "forward", _composite_ibot),
    "patch_matmul": (PatchEmbed, "forward", _conv_patch_embed),
}
"""Issue #20's step changes, each replaceable by what ran before it (``--disable``): AdamW's
per-parameter loop, the frozen last layer's weight gradient computed then dropped,
stochastic depth's gather through ``x[index]``, kornia's own hue step in the colour jitter, the
DINO and iBOT losses through autograd's composite, and the patch embedding's strided
convolution. The process-level one, glibc keeping freed memory (``ssl_core/utils/malloc.py``),
is put back with ``--disable keep_freed_memory`` (a fresh process: ``SSLOPS_KEEP_FREED_MEMORY=0``)
and is not part of ``--ablate``."""
PROCESS_PATHS = ("keep_freed_memory",)


def _put_back(trainer: Trainer, name: str, cache: dict[str, Any]) -> Any:
    """Run ``name``'s pre-#20 code in ``trainer`` from now on; returns the undo callable. AdamW's
    loop is a second optimiser over the same parameters (built once, its own moments)."""
    if name == "fused_adamw":
        fused = trainer.optimizer
        if "loop" not in cache:
            groups = [{**g, "fused": None, "foreach": False} for g in fused.param_groups]
            cache["loop"] = torch.optim.AdamW(groups)
        trainer.optimizer = cache["loop"]
        return lambda: setattr(trainer, "optimizer", fused)
    if name == "fast_hue":  # the jitters already built: swap their hue step
        jitters = [m for pipe in trainer.augment._pipes.values() for m in pipe
                   if isinstance(m, augment_mod.ColorJitter)]  # fmt: skip
        for j in jitters:
            j._hue_fn = adjust_hue
        return lambda: [setattr(j, "_hue_fn", adjust_hue_fast) for j in jitters]
    module, attr, before = SPEED_PATHS[name]
    now = getattr(module, attr)
    setattr(module, attr, before)
    return lambda: setattr(module, attr, now)


def run_ablation(trainer: Trainer, warmup: int, rounds: int, steps: int) -> dict[str, Any]:
    """Each speed path put back alone, alternating with all of them on, in one process: per
    round and variant ``steps`` timed steps (order rotated every round). Seconds per step
    (median over rounds) per variant, and each change's saving against ``all``."""
    loader = iter(trainer.loader())
    variants = ["all", *SPEED_PATHS]
    times: dict[str, list[float]] = {v: [] for v in variants}
    cache: dict[str, Any] = {}
    for v in variants:  # warm-up: each variant's one-off costs (optimizer state, caches)
        undo = _put_back(trainer, v, cache) if v != "all" else (lambda: None)
        for _ in range(warmup):
            trainer.step(next(loader)[0])
        undo()
    for r in range(rounds):
        for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
            undo = _put_back(trainer, v, cache) if v != "all" else (lambda: None)
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.step(next(loader)[0])
            times[v].append((time.perf_counter() - t0) / steps)
            undo()
    med = {v: statistics.median(ts) for v, ts in times.items()}
    return {
        "ablation_s_per_step": times,
        "ablation_median": med,
        "saves_s_per_step": {v: med[v] - med["all"] for v in SPEED_PATHS},
    }


def disable(names: list[str]) -> None:
    """Put back the pre-#20 code for the named speed paths (ablation; this process only)."""
    for name in names:
        if name == "keep_freed_memory":
            os.environ[ENV_SWITCH] = "0"  # read when the trainer's runtime starts
            continue
        module, attr, before = SPEED_PATHS[name]
        setattr(module, attr, before)


def _phase_seconds(prof: profile) -> dict[str, float]:
    """Outermost ``sslops.*`` range times in seconds (CPU wall of each range, summed)."""
    out = dict.fromkeys(PHASES, 0.0)
    for ev in prof.events():
        name = ev.name
        if name.startswith("sslops.") and name[7:] in out:
            out[name[7:]] += ev.cpu_time_total / 1e6
    return out


def _top_ops(prof: profile, n: int = 12) -> list[dict[str, Any]]:
    """The ``n`` aten ops with the most self CPU time."""
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count}
        for e in rows
        if not e.key.startswith("sslops.")
    ][:n]


def run_profile(trainer: Trainer, warmup: int, steps: int) -> dict[str, Any]:
    """``warmup`` unprofiled steps, then ``steps`` profiled ones; per-step phase seconds."""
    loader = iter(trainer.loader())
    for _ in range(warmup):
        images, _idx, _bad = next(loader)
        trainer.step(images)
    load_s = step_s = 0.0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            t0 = time.perf_counter()
            images, _idx, _bad = next(loader)
            t1 = time.perf_counter()
            trainer.step(images)
            load_s, step_s = load_s + t1 - t0, step_s + time.perf_counter() - t1
    phases = {k: v / steps for k, v in _phase_seconds(prof).items()}
    step = step_s / steps
    phases["other"] = max(0.0, step - sum(phases.values()))
    total = step + load_s / steps
    batch = trainer.cfg.batch_size
    return {
        "data_loading_s": load_s / steps,
        "step_s": step,
        "phases_s": phases,
        "images_per_s": batch / total,
        "top_ops": _top_ops(prof),
    }


def render_md(runs: list[dict[str, Any]], out_dir: Path) -> str:
    """One table row per (preset, tag) run: seconds per step and share of the step + loading."""
    cols = ["data_loading", *PHASES, "other"]
    head = "| preset | tag | precision | img/s | s/step | " + " | ".join(cols) + " |"
    lines = [
        "# Training-step profile (CPU)",
        "",
        "Seconds per step (share of step + data loading). Written by "
        "`benchmarks/train_profile.py`; top ops per run in `train_profile.json`.",
        "",
        head,
        "|" + "---|" * (5 + len(cols)),
    ]
    for r in runs:
        total = r["step_s"] + r["data_loading_s"]
        vals = {"data_loading": r["data_loading_s"], **r["phases_s"]}
        cells = [f"{vals[c]:.3f} ({vals[c] / total:.0%})" for c in cols]
        lines.append(
            f"| {r['preset']} | {r['tag']} | {r.get('precision', 'fp32')} | "
            f"{r['images_per_s']:.2f} | {total:.2f} | " + " | ".join(cells) + " |"
        )
    lines += _ablation_lines(out_dir)
    lines += ["", "Runs:", ""]
    lines += [
        f"- {r['preset']}/{r['tag']}: `{r['command']}`, {r['date']}, {r['machine']}" for r in runs
    ]
    return "\n".join(lines) + "\n"


def _ablation_lines(out_dir: Path) -> list[str]:
    """The per-change table from ``train_ablation_<preset>.json`` files (``--ablate`` runs)."""
    lines = []
    for path in sorted(out_dir.glob("train_ablation_*.json")):
        a = json.loads(path.read_text())
        med, all_on = a["ablation_median"], a["ablation_median"]["all"]
        lines += ["", f"### Each change on its own: {path.stem.removeprefix('train_ablation_')}",
                  "", f"`{a['command']}` ({a.get('date', '')}): every speed path on, and each "
                  "put back alone (the code before it), alternating in one process, order "
                  "rotated per round; median s/step over rounds." + (f" Note: {a['note']}."
                  if a.get("note") else ""), "",
                  "| variant | s/step (median) | per round | saves s/step | share |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for v, ts in a["ablation_s_per_step"].items():
            saved = med[v] - all_on if v != "all" else 0.0
            name = "all on" if v == "all" else f"without {v}"
            per = ", ".join(f"{t:.2f}" for t in ts)
            lines.append(f"| {name} | {med[v]:.2f} | {per} | {saved:+.2f} | "
                         f"{saved / med[v]:+.1%} |")  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="folder of .png/.jpg images")
    ap.add_argument("--preset", choices=["demo", "vits14"], default="vits14")
    ap.add_argument("--tag", default="before", help="label of this run (e.g. before / after)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--disable", nargs="*", default=[], choices=sorted([*SPEED_PATHS, *PROCESS_PATHS]),
                    help="speed paths to replace by the code before them (ablation)")  # fmt: skip
    ap.add_argument("--ablate", type=int, default=0, metavar="ROUNDS",
                    help="instead of profiling: ROUNDS of each speed path put back alone vs all "
                    "on, alternating in one process (--steps steps each)")  # fmt: skip
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                    help="train.precision (default: params.yaml's)")  # fmt: skip
    args = ap.parse_args()
    disable(args.disable)
    extra = {"precision": args.precision} if args.precision else {}
    cfg = recipe(args.preset, args.params, max_steps=None, **extra)
    with tempfile.TemporaryDirectory(prefix="sslops-profile-") as tmp:
        trainer = build_trainer(cfg, args.images, Path(tmp))
        if args.ablate:
            res = run_ablation(trainer, args.warmup, args.ablate, args.steps)
            print(json.dumps(res, indent=1))
            path = args.out / f"train_ablation_{args.preset}.json"
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            command = "python benchmarks/train_profile.py " + " ".join(sys.argv[1:])
            path.write_text(json.dumps({**res, "command": command, "date": stamp}, indent=1))
            return
        res = run_profile(trainer, args.warmup, args.steps)
    res.update(
        preset=args.preset,
        tag=args.tag,
        disabled=args.disable,
        precision=resolve_precision(cfg.precision, torch.device("cpu")),
        command="python benchmarks/train_profile.py " + " ".join(sys.argv[1:]),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=f"{platform.machine()}, nproc {os.cpu_count()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}",
    )
    print(json.dumps({k: v for k, v in res.items() if k != "top_ops"}, indent=1))
    path = args.out / "train_profile.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    runs = [r for r in runs if (r["preset"], r["tag"]) != (args.preset, args.tag)] + [res]
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": runs}, indent=1))
    (args.out / "train_profile.md").write_text(render_md(runs, args.out))


if __name__ == "__main__":
    main()
