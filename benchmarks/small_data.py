"""Which pretraining objective for a small pool? DINOv2 recipe vs the small-data modes vs XCiT,
at equal compute, on the demo's curated set and on a smaller subset of it (issue 16).

Arms (overrides of params.yaml ``train:``; everything else is the demo recipe):

* ``dinov2``     the default: DINO + iBOT + KoLeo, ViT ``tiny`` at patch 7
* ``ibot``       ``objective: ibot`` (masked-image modelling + in-view CLS distillation)
* ``splitmask``  ``objective: splitmask`` (split-view MIM + InfoNCE between the halves)
* ``xcit``       ``preset: xcit_demo`` (its own patch 4), DINOv2 objective

Equal compute: every arm first trains a few steps in turn (alternating, each in a fresh
single-threaded process) to measure its steady seconds per step; an arm then gets
``budget_steps * t(dinov2) / t(arm)`` steps, i.e. the wall-clock that ``budget_steps`` steps of
the default recipe take. Every run then trains in its own process (``--workers`` at a time, one
thread each) and is measured by the report's protocol (:func:`ssl_core.eval.protocol.measure`):
kNN k=20 (T from params), linear probes on CLS and on cls4+avgpool, retrieval, against the
raw-pixel baseline. The pool subsets are drawn once (seed 0), the same for every arm and seed.

Usage (after ``make demo``, which writes the curated set and the eval split)::

    .venv/bin/python benchmarks/small_data.py --budget-steps 150 --pools 0 1000 --seeds 0 1
    .venv/bin/python benchmarks/small_data.py --budget-steps 4 --calib-steps 4 --pools 200 \\
        --seeds 0 --out /tmp/sd   # smoke run

``--pools 0`` means the whole curated set. Results: ``benchmarks/results/small_data.{json,md}``
(``--out DIR``), rewritten after every finished run; a rerun skips the runs already there with
the same settings, so an interrupted invocation continues. Checkpoints in
``benchmarks/runs/small_data/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.subprocess_worker import peak_rss_mb, run_worker  # noqa: E402

ARMS: dict[str, dict] = {
    "dinov2": {},
    "ibot": {"objective": "ibot"},
    "splitmask": {"objective": "splitmask"},
    "xcit": {"preset": "xcit_demo", "patch_size": None},
}
K = 20
SUBSET_SEED = 0


def _train_paths(params, pool_n: int) -> list[str]:
    import numpy as np
    import polars as pl

    from ssl_core.stages.curate import CURATED

    f = Path(params.paths.curated_dir) / CURATED
    if not f.exists():
        raise SystemExit(f"{f} is missing: run `make demo` first")
    paths = pl.read_parquet(f)["path"].to_list()
    if pool_n and pool_n < len(paths):
        idx = np.random.default_rng(SUBSET_SEED).choice(len(paths), pool_n, replace=False)
        paths = [paths[i] for i in sorted(idx)]
    return paths


def _cfg(params, arm: str, seed: int, steps: int):
    from ssl_core import sizing
    from ssl_core.config import TrainConfig

    upd = {**ARMS[arm], "seed": seed, "max_steps": steps, "num_threads": 1, "knn_every": 0}
    cfg = TrainConfig.model_validate({**params.train.model_dump(), **upd})
    return cfg, sizing


def _worker(spec: dict) -> dict:
    """One calibration or one run, in this (fresh) process."""
    from ssl_core.config import load_params
    from ssl_core.curation.embed import make_embedder
    from ssl_core.data.eval_set import load_eval_set
    from ssl_core.eval.protocol import measure
    from ssl_core.train.collapse import CollapseError
    from ssl_core.train.teacher import train_teacher

    params = load_params(ROOT / "params.yaml")
    paths = _train_paths(params, spec["pool_n"])
    cfg, sizing = _cfg(params, spec["arm"], spec["seed"], spec["steps"])
    cfg = sizing.resolve_epochs(cfg, len(paths), sizing.TEACHER_IMAGES, "train")
    stamps: list[float] = []
    out = Path(spec["run_dir"])
    t0 = time.perf_counter()
    try:
        summary = train_teacher(
            cfg, Path(params.paths.pool), paths, out, resume=spec["mode"] == "run",
            progress=False, on_step=lambda step, m: stamps.append(time.perf_counter()),
        )  # fmt: skip
    except CollapseError as e:
        return {**spec, "collapsed": str(e)[:300], "train_s": time.perf_counter() - t0}
    train_s = time.perf_counter() - t0
    if spec["mode"] == "calib":
        gaps = [b - a for a, b in zip(stamps[2:], stamps[3:], strict=False)]
        return {**spec, "s_per_step": statistics.median(gaps), "peak_rss_mb": peak_rss_mb()}
    evset = load_eval_set(params)
    emb = make_embedder(str(out), cfg.image_size)
    m = measure(emb, evset, [K], params.eval.temperature, seed=params.seed)
    return {
        **spec, "train_s": train_s, "images_seen": summary["images_seen"], "n_train": len(paths),
        "knn": m["knn"][str(K)], "linear_cls": m["linear"]["cls"]["top1"],
        "linear_cls4": m["linear"].get("cls4_avgpool", {}).get("top1"),
        "recall1": m["retrieval"]["recall@1"], "map": m["retrieval"]["mAP"],
        "peak_rss_mb": peak_rss_mb(),
    }  # fmt: skip


def _raw_pixels() -> dict:
    from ssl_core.config import load_params
    from ssl_core.curation.embed import PixelEmbedder
    from ssl_core.data.eval_set import load_eval_set
    from ssl_core.eval.protocol import measure

    params = load_params(ROOT / "params.yaml")
    m = measure(PixelEmbedder(params.embed.image_size), load_eval_set(params), [K],
                params.eval.temperature, seed=params.seed)  # fmt: skip
    return {"knn": m["knn"][str(K)], "linear_cls": m["linear"]["cls"]["top1"],
            "recall1": m["retrieval"]["recall@1"], "map": m["retrieval"]["mAP"]}  # fmt: skip


def _calibrate(args, runs: Path) -> dict[str, float]:
    """Median steady s/step per arm: the arms take turns (``--calib-rounds``), min over rounds."""
    per: dict[str, list[float]] = {a: [] for a in args.arms}
    for r in range(args.calib_rounds):
        for arm in args.arms:
            spec = {"mode": "calib", "arm": arm, "pool_n": args.pools[0], "seed": 0,
                    "steps": args.calib_steps, "run_dir": str(runs / f"calib_{arm}_{r}")}  # fmt: skip
            res = run_worker(__file__, spec)
            if "collapsed" in res:
                raise SystemExit(f"calibration of {arm} collapsed: {res['collapsed']}")
            per[arm].append(res["s_per_step"])
    return {a: min(v) for a, v in per.items()}


def _run_key(r: dict) -> tuple:
    return (r["arm"], r["pool_n"], r["seed"], r["steps"])


def _md(res: dict) -> str:
    raw = res["raw_pixels"]
    lines = [
        "# Small pools: DINOv2 recipe vs small-data modes vs XCiT at equal compute (issue 16)",
        "",
        f"- command: `{res['command']}`",
        f"- machine: {res['machine']}; date {res['date']}; wall {res['wall_s']:.0f} s",
        f"- budget: {res['budget_steps']} steps of the default recipe (batch "
        f"{res['batch_size']}); per arm steps = budget x t(dinov2) / t(arm), t from "
        f"{res['calib_rounds']} alternating calibration rounds of {res['calib_steps']} steps "
        "(1 thread each):",
        "",
        "| arm | train overrides | s/step (1 thread) | steps at equal compute |",
        "|---|---|---|---|",
    ]
    for arm, t in res["s_per_step"].items():
        lines.append(f"| {arm} | `{json.dumps(ARMS[arm])}` | {t:.2f} | {res['steps'][arm]} |")
    lines += [
        "",
        f"Raw-pixel baseline ({res['pixel_size']} px): kNN {raw['knn'] * 100:.1f} %, linear "
        f"{raw['linear_cls'] * 100:.1f} %, recall@1 {raw['recall1'] * 100:.1f} %, mAP "
        f"{raw['map']:.3f}. kNN k={K} on the EMA teacher's CLS; linear probes on cached bank "
        "features, lr picked on a bank split, top-1 on the query side (report protocol).",
        "",
        "| pool | arm | seeds | kNN k=20 | linear CLS | linear cls4+avgpool | recall@1 | mAP |"
        " train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += _summary_rows(res["runs"])
    lines += [
        "",
        "Mean ± spread (half the max-min range) over seeds; per-run values in the JSON.",
        "",
    ]
    return "\n".join(lines)


def _fmt(vals: list[float], pct: bool = True) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    m, h = statistics.fmean(vals), (max(vals) - min(vals)) / 2
    return f"{m * 100:.1f} ± {h * 100:.1f} %" if pct else f"{m:.3f} ± {h:.3f}"


def _summary_rows(runs: list[dict]) -> list[str]:
    rows = []
    for pool in sorted({r["pool_n"] for r in runs}, reverse=True):
        for arm in ARMS:
            rs = [r for r in runs if r["pool_n"] == pool and r["arm"] == arm]
            if not rs:
                continue
            ok = [r for r in rs if "collapsed" not in r]
            n = ok[0]["n_train"] if ok else pool
            seeds = ",".join(str(r["seed"]) for r in rs) + (
                f" ({len(rs) - len(ok)} collapsed)" if len(ok) < len(rs) else ""
            )
            cells = [
                _fmt([r[k] for r in ok]) for k in ("knn", "linear_cls", "linear_cls4", "recall1")
            ]
            cells.append(_fmt([r["map"] for r in ok], pct=False))
            cells.append(f"{statistics.fmean([r['train_s'] for r in rs]):.0f}")
            rows.append(f"| {n} | {arm} | {seeds} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--pools", nargs="+", type=int, default=[0, 1000], help="0: whole curated set")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--budget-steps", type=int, default=150)
    ap.add_argument("--calib-steps", type=int, default=10)
    ap.add_argument("--calib-rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="runs at a time (1 thread each)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs" / "small_data")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    from ssl_core.config import load_params

    params = load_params(ROOT / "params.yaml")
    dst = args.out / "small_data.json"
    t0 = time.perf_counter()
    s_per_step = _calibrate(args, args.runs)
    steps = {a: max(1, round(args.budget_steps * s_per_step["dinov2"] / t))
             for a, t in s_per_step.items()} if "dinov2" in s_per_step else {
             a: args.budget_steps for a in s_per_step}  # fmt: skip
    old = json.loads(dst.read_text())["runs"] if dst.exists() else []
    done = {_run_key(r): r for r in old}
    todo = [
        {
            "mode": "run",
            "arm": a,
            "pool_n": p,
            "seed": s,
            "steps": steps[a],
            "run_dir": str(args.runs / f"{a}_{p}_s{s}_{steps[a]}"),
        }  # fmt: skip
        for s in args.seeds  # every arm and pool at seed 0 first: a cut-short run is usable
        for p in args.pools
        for a in args.arms
    ]
    res = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {args.workers} runs at a "
        "time with 1 thread each (shared machine)",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "budget_steps": args.budget_steps, "batch_size": params.train.batch_size,
        "calib_steps": args.calib_steps, "calib_rounds": args.calib_rounds,
        "pixel_size": params.embed.image_size, "raw_pixels": _raw_pixels(),
        "s_per_step": s_per_step, "steps": steps, "runs": [],
    }  # fmt: skip

    def finish() -> None:
        res["runs"] = [done[_run_key(s)] for s in todo if _run_key(s) in done]
        res["wall_s"] = time.perf_counter() - t0
        args.out.mkdir(parents=True, exist_ok=True)
        from ssl_core.utils.atomic import write_json, write_text

        write_json(dst, res)
        write_text(args.out / "small_data.md", _md(res))

    pending = [s for s in todo if _run_key(s) not in done]
    with ThreadPoolExecutor(args.workers) as pool:
        for fut in as_completed([pool.submit(run_worker, __file__, s) for s in pending]):
            r = fut.result()
            done[_run_key(r)] = r
            finish()
    finish()
    print(_md(res))


if __name__ == "__main__":
    main()
