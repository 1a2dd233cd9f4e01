"""Training throughput: the project's full training loop vs lightly-train (issue #20, item 3).

Both sides train DINOv2-style (DINO + iBOT + KoLeo, EMA teacher, multi-crop) on the same folder
of images with the same model, crops and batch, on the CPU, one fresh process per run, in
alternation (project, lightly, lightly, project, ... : the order flips every round so that
machine-load drift hits both). Per run: ``--steps`` optimisation steps; the first ``--warmup``
are excluded. Reported per side: steady images/s (batch x steps after warm-up / time between
the end of step ``warmup`` and the last step's end: data loading, augmentation and everything
the loop does included), startup (process spawn to the first step's start: imports, model,
optimiser, data), peak RSS (``VmHWM`` of the process); the ratio project / lightly per round and
its median.

* **project**: :class:`ssl_core.train.trainer.Trainer` (``Trainer.train``, the loop the teacher
  stage runs: DataLoader decode + resize, kornia multi-crop, teacher and student forwards,
  centring, losses, backward, clip, AdamW, EMA, metrics), with ``params.yaml``'s ``train:``
  recipe and :data:`MATCHED` on top.
* **lightly**: ``lightly_train.pretrain(method="dinov2")`` 0.18, installed by
  ``benchmarks/lightly_train_peer.py`` into a throwaway virtualenv (never a project
  dependency); its settings and what it forces: ``benchmarks/lightly_train_worker.py``'s docstring.

Precision (:data:`SIDES`): each tool runs once with its own default on this CPU and once with
the other precision, so that every ratio is also read at identical precision:

* ``project``: ``train.precision: auto`` from params.yaml (bf16 autocast on a CPU with AMX /
  AVX512-BF16 units, else fp32; ``ssl_core/train/precision.py``); the resolved value is shown;
* ``project_fp32``: ``precision: fp32``;
* ``lightly``: ``precision="32-true"``, what lightly-train's ``precision="auto"`` picks on a CPU
  (bf16-mixed only on a CUDA GPU);
* ``lightly_bf16``: ``precision="bf16-mixed"`` (Lightning's ``torch.autocast("cpu", bf16)``).

Matched settings (:data:`MATCHED`): ViT-S/14, 4 registers, 56 px globals x 2 + 28 px locals x 4,
batch 64, DINO head 384-2048-2048-256 -> 65,536 prototypes shared with iBOT, masks on half the
globals (ratio 0.1-0.5), KoLeo, softmax centring (lightly's default), drop-path 0.1 (linear over
depth), layer-scale 1e-5, layer-wise lr decay 0.9, clip 3.0, last layer frozen for the whole
run (lightly freezes it for 1,250 steps), no DataLoader workers, torch threads = cores,
``OMP_WAIT_POLICY=PASSIVE`` for both (the project's CLI sets it; without it, lightly-train's
steps took 2.4x as long next to a background process in a smoke run, the project's 1.1x).

Images (``--images``, default: the first 10,000 Fashion-MNIST training images written as PNGs
to ``<tmp>/sslops-bench/fashion-mnist-10000``; 28 px grey, both sides read them as RGB at 56 px).

Usage::

    .venv/bin/python benchmarks/train_throughput.py                  # 3 rounds x 12 steps
    .venv/bin/python benchmarks/train_throughput.py --rounds 1 --steps 5 --tag smoke
    .venv/bin/python benchmarks/train_throughput.py --sides project lightly   # two sides only

Results: ``benchmarks/results/train_throughput.json`` (runs kept by tag) and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

# both sides' processes inherit it: idle OpenMP threads sleep instead of spinning, as the
# project's CLI runs training (ssl_core/cli.py); same environment for both
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lightly_train_peer import ensure_venv, run_lightly, steady_images_per_s  # noqa: E402
from lightly_train_worker import vm_hwm_mb  # noqa: E402

if TYPE_CHECKING:
    from ssl_core.config import TrainConfig
    from ssl_core.train.trainer import Trainer

RESULTS = HERE / "results"
BENCH_DIR = Path(tempfile.gettempdir()) / "sslops-bench"
MATCHED: dict[str, Any] = {
    "preset": "small",
    "image_size": 56,
    "patch_size": 14,
    "num_register_tokens": 4,
    "n_local_crops": 4,
    "global_crops_scale": [0.32, 1.0],
    "local_crops_scale": [0.05, 0.32],
    "batch_size": 64,
    "out_dim": 65536,
    "head_hidden_dim": 2048,
    "head_bottleneck_dim": 256,
    "head_nlayers": 3,
    "separate_ibot_head": False,
    "mask_probability": 0.5,
    "mask_ratio_min": 0.1,
    "mask_ratio_max": 0.5,
    "centering": "softmax",
    "drop_path_rate": 0.1,
    "layerscale_init": 1e-5,
    "layer_decay": 0.9,
    "lr": 0.001,
    "grad_clip": 3.0,
    "koleo_weight": 0.1,
    "num_workers": 0,
    "epochs": 1,
    "freeze_last_layer_epochs": 1.0,
    "checkpoint_every": 1_000_000,
    "knn_every": 0,
}
"""Project recipe keys set to lightly-train's ``dinov2`` settings (module docstring)."""

SIDES: dict[str, tuple[str, str]] = {
    "project": ("project", "params"),  # params.yaml's train.precision (auto)
    "project_fp32": ("project", "fp32"),
    "lightly": ("lightly", "32-true"),  # lightly-train's own choice on a CPU
    "lightly_bf16": ("lightly", "bf16-mixed"),
}
"""Side name -> (tool, precision) (module docstring)."""

PAIRS: dict[str, tuple[str, str]] = {
    "each tool's default": ("project", "lightly"),
    "project default vs lightly bf16-mixed": ("project", "lightly_bf16"),
    "both fp32": ("project_fp32", "lightly"),
}
"""Ratio name -> (project side, lightly side); a ratio per round where both sides ran."""


def write_images(n: int, out: Path) -> Path:
    """The first ``n`` Fashion-MNIST training images as PNGs in ``out`` (kept when complete)."""
    from PIL import Image

    from ssl_core.config import DemoConfig
    from ssl_core.data.fashion_mnist import load_split

    if out.is_dir() and len(list(out.glob("*.png"))) == n:
        return out
    x, _ = load_split(DemoConfig().source_dir, "train")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(x[i]).save(out / f"{i:05d}.png")
    return out


# ------------------------------------------------------------------------ project worker


def recipe(preset: str, params: Path, **overrides: Any) -> TrainConfig:
    """``params.yaml``'s ``train:`` section with :data:`MATCHED` on top (``vits14``) or one
    epoch (``demo``), then ``overrides``."""
    from ssl_core.config import TrainConfig, load_params

    base = load_params(params).train.model_dump()
    extra = MATCHED if preset == "vits14" else {"epochs": 1}
    return TrainConfig(**{**base, **extra, **overrides})


def build_trainer(cfg: TrainConfig, images: Path, out_dir: Path, on_step: Any = None) -> Trainer:
    """The project's :class:`Trainer` over every image file in ``images`` (sorted), writing to
    ``out_dir``; no resume, no progress bar."""
    from ssl_core.train.runtime import Runtime
    from ssl_core.train.teacher import build_teacher_model
    from ssl_core.train.trainer import RunOptions, RunSpec, Trainer

    paths = sorted(p.name for p in images.iterdir() if p.suffix.lower() in {".png", ".jpg"})
    spec = RunSpec(cfg, build_teacher_model(cfg), cfg.image_size, images, paths, out_dir,
                   {"role": "benchmark"})  # fmt: skip
    opts = RunOptions(resume=False, progress=False, on_step=on_step)
    return Trainer(spec, Runtime.start(cfg.num_threads), opts)


def project_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: train ``spec["steps"]`` steps with the project's loop; timings."""
    t_main = time.time()
    import torch

    import ssl_core.train.teacher  # noqa: F401  (the imports a run pays for, timed here)
    import ssl_core.train.trainer  # noqa: F401
    from ssl_core.train.precision import resolve_precision

    t_imported = time.time()
    extra = {} if spec["precision"] == "params" else {"precision": spec["precision"]}
    cfg = recipe("vits14", Path(spec["params"]), max_steps=spec["steps"], **extra)
    starts: list[float] = []
    ends: list[float] = []
    peak: list[float] = []

    def on_step(step: int, _rec: dict[str, float]) -> None:
        ends.append(time.time())
        if step == spec["steps"]:  # before the final checkpoint is written
            peak.append(vm_hwm_mb())

    with tempfile.TemporaryDirectory(prefix="sslops-throughput-") as out:
        trainer = build_trainer(cfg, Path(spec["images_dir"]), Path(out), on_step)
        starts.append(time.time())  # the loop starts: first batch load is step 1's cost
        trainer.train()
    return {
        "step_end_times": ends,
        "t_process_start": spec["t_spawn"],
        "t_worker_main": t_main,
        "t_imported": t_imported,
        "t_first_step_start": starts[0],
        "batch_size": cfg.batch_size,
        "peak_rss_mb": peak[0] if peak else vm_hwm_mb(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": resolve_precision(cfg.precision, torch.device("cpu")),
        "settings": {k: getattr(cfg, k) for k in MATCHED},
    }


def run_project(
    images: Path, steps: int, params: Path, timeout_s: float, precision: str = "params"
) -> dict[str, Any]:
    """:func:`project_worker` in a fresh process of this interpreter (``precision``: a
    ``train.precision`` value, or ``params`` for params.yaml's)."""
    spec = {"images_dir": str(images), "steps": steps, "params": str(params.resolve()),
            "precision": precision}  # fmt: skip
    spec["t_spawn"] = time.time()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"project worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ driver


def summarise(res: dict[str, Any], warmup: int) -> dict[str, float]:
    """Steady img/s, startup seconds and peak RSS of one run."""
    return {
        "images_per_s": steady_images_per_s(res, warmup),
        "startup_s": res["t_first_step_start"] - res["t_process_start"],
        "peak_rss_mb": res["peak_rss_mb"],
    }


def _run_side(side: str, args: argparse.Namespace, images: Path, lightly_python: Path) -> dict:
    tool, precision = SIDES[side]
    if tool == "project":
        return run_project(images, args.steps, args.params, args.timeout, precision)
    return run_lightly(lightly_python, images, BENCH_DIR / "lightly-run", args.steps,
                       timeout_s=args.timeout, extra={"precision": precision})  # fmt: skip


def alternate(args: argparse.Namespace, images: Path, lightly_python: Path) -> list[dict]:
    """``rounds`` x every side of ``args.sides``, the order rotated by one every round."""
    runs = []
    for r in range(args.rounds):
        k = r % len(args.sides)
        for side in args.sides[k:] + args.sides[:k]:
            t = time.time()
            res = _run_side(side, args, images, lightly_python)
            row = {"round": r, "side": side, **summarise(res, args.warmup)}
            row["precision"] = res.get("precision") or res["settings"]["precision"]
            row["load_avg_1m"] = os.getloadavg()[0]
            print(f"round {r} {side} ({row['precision']}): {row['images_per_s']:.2f} img/s, "
                  f"startup {row['startup_s']:.1f} s, peak {row['peak_rss_mb']:.0f} MB "
                  f"({time.time() - t:.0f} s)", flush=True)  # fmt: skip
            runs.append({**row, "raw": res})
    return runs


def aggregate(runs: list[dict]) -> dict[str, Any]:
    """Medians per side and, per :data:`PAIRS` entry whose sides both ran, the per-round ratios
    project / lightly and their median."""
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(r["side"], []).append(r)
    keys = ("images_per_s", "startup_s", "peak_rss_mb")
    med = {s: {k: statistics.median(r[k] for r in rs) for k in keys} for s, rs in by.items()}
    pairs = {}
    for name, (a, b) in PAIRS.items():
        if a in by and b in by:
            ratios = [p["images_per_s"] / q["images_per_s"]
                      for p, q in zip(by[a], by[b], strict=True)]  # fmt: skip
            pairs[name] = {"sides": [a, b], "ratios": ratios, "median": statistics.median(ratios)}
    return {"median": med, "pairs": pairs}


def _cpu_units() -> str:
    """Whether the CPU has bf16 matrix units, as ``train.precision: auto`` decides it."""
    import torch

    from ssl_core.train.precision import native_bf16

    return (f"bf16 matrix units (AMX / AVX512-BF16) {native_bf16('cpu')}, "
            f"capability {torch.backends.cpu.get_cpu_capability()}")  # fmt: skip


def _side_rows(res: dict[str, Any]) -> list[str]:
    rows = [
        "| side | precision | steady img/s (median) | per round | startup s | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for side, s in res["aggregate"]["median"].items():
        mine = [r for r in res["runs"] if r["side"] == side]
        per = ", ".join(f"{r['images_per_s']:.2f}" for r in mine)
        prec = mine[0].get("precision", "fp32")  # runs before the precision sides were fp32
        rows.append(f"| {side} | {prec} | {s['images_per_s']:.2f} | {per} | "
                    f"{s['startup_s']:.1f} | {s['peak_rss_mb']:.0f} |")  # fmt: skip
    return rows


def _ratio_lines(agg: dict[str, Any]) -> list[str]:
    if "pairs" not in agg:  # a run before the precision sides: project / lightly, both fp32
        ratios = ", ".join(f"{x:.2f}" for x in agg["ratios"])
        return [f"**project / lightly (both fp32): {agg['median_ratio']:.2f}x** (rounds: {ratios})"]
    return [
        f"- **{name}** ({p['sides'][0]} / {p['sides'][1]}): **{p['median']:.2f}x** (rounds: "
        + ", ".join(f"{x:.2f}" for x in p["ratios"])
        + ")"
        for name, p in agg["pairs"].items()
    ]


def render_md(results: dict[str, Any]) -> str:
    lines = [
        "# Training throughput: project vs lightly-train (CPU)",
        "",
        "Written by `benchmarks/train_throughput.py` (settings and sides in its docstring); "
        "reading and the per-change gains: docs/training.md, section 'Training throughput on "
        "CPU'.",
        "",
    ]
    for tag, res in results.items():
        lines += [
            f"## {tag}",
            "",
            f"- command: `{res['command']}`",
            f"- date: {res['date']}; machine: {res['machine']}",
            f"- {res['rounds']} rounds x {res['steps']} steps per run, first {res['warmup']} "
            f"excluded; {res['n_images']} images; lightly-train {res['lightly_versions']}",
            "",
            *_side_rows(res),
            "",
            *_ratio_lines(res["aggregate"]),
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--n-images", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tag", default="default")
    ap.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES))
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(project_worker(json.loads(args.worker))))
        return
    images = args.images or write_images(
        args.n_images, BENCH_DIR / f"fashion-mnist-{args.n_images}"
    )
    uses_lightly = any(SIDES[side][0] == "lightly" for side in args.sides)
    lightly_python = ensure_venv() if uses_lightly else Path()
    runs = alternate(args, images, lightly_python)
    import torch

    lightly_raw = next((r["raw"] for r in runs if SIDES[r["side"]][0] == "lightly"), {})
    res = {
        "command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, nproc {os.cpu_count()}, torch {torch.__version__}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, {_cpu_units()}",
        "rounds": args.rounds,
        "steps": args.steps,
        "warmup": args.warmup,
        "n_images": len(list(images.glob("*.png"))),
        "lightly_versions": lightly_raw.get("versions"),
        "aggregate": aggregate(runs),
        "runs": runs,
    }
    path = args.out / "train_throughput.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[args.tag] = res
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    (args.out / "train_throughput.md").write_text(render_md(results))
    print(render_md({args.tag: res}))


if __name__ == "__main__":
    main()
