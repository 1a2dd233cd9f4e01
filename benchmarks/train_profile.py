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
* ``vits14``: ViT-S/14, 4 registers, 65,536 prototypes (DINOv2 head: 2048 hidden, 256
  bottleneck), 2 x 56 px globals + 4 x 28 px locals, batch 64: the setting of issue #20's
  comparison with lightly-train (the rest of the recipe from ``params.yaml``).

Usage::

    .venv/bin/python benchmarks/train_profile.py --images /tmp/fm10k --preset vits14
    .venv/bin/python benchmarks/train_profile.py --images /tmp/fm10k --preset demo --tag after

Results: ``benchmarks/results/train_profile.json`` (runs appended, keyed by preset and tag) and
``train_profile.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from ssl_core.config import TrainConfig, load_params
from ssl_core.train.runtime import Runtime
from ssl_core.train.teacher import build_teacher_model
from ssl_core.train.trainer import RunOptions, RunSpec, Trainer

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
VITS14 = {
    "preset": "small",
    "image_size": 56,
    "patch_size": 14,
    "num_register_tokens": 4,
    "out_dim": 65536,
    "head_hidden_dim": 2048,
    "head_bottleneck_dim": 256,
    "n_local_crops": 4,
    "batch_size": 64,
}
"""Issue #20's comparison setting (lightly-train's ``vits14``, crops 2 x 56 + 4 x 28)."""


def recipe(preset: str, params: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """``params.yaml``'s ``train:`` section, with the ``vits14`` setting on top when asked."""
    base = load_params(params).train.model_dump()
    extra = VITS14 if preset == "vits14" else {}
    return TrainConfig(**{**base, **extra, **(overrides or {}), "epochs": 1, "max_steps": None})


def build_trainer(cfg: TrainConfig, images: Path, out_dir: Path) -> Trainer:
    """A :class:`Trainer` over every image file in ``images`` (sorted), writing to ``out_dir``."""
    paths = sorted(p.name for p in images.iterdir() if p.suffix.lower() in {".png", ".jpg"})
    spec = RunSpec(
        cfg=cfg,
        model=build_teacher_model(cfg),
        image_size=cfg.image_size,
        root=images,
        paths=paths,
        out_dir=out_dir,
        config_json={"role": "profile"},
    )
    return Trainer(spec, Runtime.start(cfg.num_threads), RunOptions(resume=False, progress=False))


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


def render_md(runs: list[dict[str, Any]]) -> str:
    """One table row per (preset, tag) run: seconds per step and share of the step + loading."""
    cols = ["data_loading", *PHASES, "other"]
    head = "| preset | tag | img/s | s/step | " + " | ".join(cols) + " |"
    lines = [
        "# Training-step profile (CPU)",
        "",
        "Seconds per step (share of step + data loading). Written by "
        "`benchmarks/train_profile.py`; top ops per run in `train_profile.json`.",
        "",
        head,
        "|" + "---|" * (4 + len(cols)),
    ]
    for r in runs:
        total = r["step_s"] + r["data_loading_s"]
        vals = {"data_loading": r["data_loading_s"], **r["phases_s"]}
        cells = [f"{vals[c]:.3f} ({vals[c] / total:.0%})" for c in cols]
        lines.append(
            f"| {r['preset']} | {r['tag']} | {r['images_per_s']:.2f} | {total:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Runs:", ""]
    lines += [
        f"- {r['preset']}/{r['tag']}: `{r['command']}`, {r['date']}, {r['machine']}" for r in runs
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="folder of .png/.jpg images")
    ap.add_argument("--preset", choices=["demo", "vits14"], default="vits14")
    ap.add_argument("--tag", default="before", help="label of this run (e.g. before / after)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    cfg = recipe(args.preset, args.params)
    with tempfile.TemporaryDirectory(prefix="sslops-profile-") as tmp:
        trainer = build_trainer(cfg, args.images, Path(tmp))
        res = run_profile(trainer, args.warmup, args.steps)
    res.update(
        preset=args.preset,
        tag=args.tag,
        command="python benchmarks/train_profile.py " + " ".join(os.sys.argv[1:]),
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
    (args.out / "train_profile.md").write_text(render_md(runs))


if __name__ == "__main__":
    main()
