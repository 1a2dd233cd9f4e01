"""What Dagster + DVC (+ the TorchX jobs) cost over calling the stage functions directly.

Two copies of the project, built from scratch one after the other in one run:

- **orchestrated**: ``python -m orchestration.pipeline`` (what ``make demo`` runs: each asset runs
  ``dvc repro --single-item <stage>``, which runs ``sslops <stage>``; embed, teacher and
  distill submit ``local_cwd`` TorchX jobs; GX checks are blocking asset checks);
- **direct**: one Python process calling every stage function and GX suite in graph order.

Each run's time is split into the stages' own work (``duration_s`` in every ``lineage.json``,
measured inside the stage) and the rest, so the overhead is also measured *within* the
orchestrated run, independent of how busy the machine was during the other one.

Usage::

    .venv/bin/python benchmarks/orchestration_overhead.py --scale tiny   # ~5 min, smoke
    .venv/bin/python benchmarks/orchestration_overhead.py --scale demo   # ~40 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.tiny_project import make_tiny_project, run  # noqa: E402

BIN = Path(sys.executable).parent
DIRECT = """
import json, os, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from ssl_core.config import load_params
from ssl_core.stages import (checks, cluster, curate, dedup, distill, embed, evaluate,
                             import_demo, ingest, train_teacher)
p = load_params("params.yaml")
t0 = time.perf_counter()
order = [(import_demo, None), (ingest, "manifest"), (embed, None), (dedup, "dedup"),
         (cluster, None), (curate, "curated"), (train_teacher, "teacher"),
         (distill, "students"), (evaluate, "report")]
for mod, suite in order:
    mod.run(p, progress=False)
    if suite:
        assert checks.run(p, suite).success, suite
print(json.dumps({"wall_s": time.perf_counter() - t0}))
"""
LINEAGE_DIRS = ("demo/pool", "manifest", "embeddings", "dedup", "clusters", "curated",
                "teacher", "students/*", "reports")  # fmt: skip


def stage_seconds(project: Path) -> float:
    """Sum of the stages' own durations (their lineage records)."""
    total = 0.0
    for pattern in LINEAGE_DIRS:
        for d in (project / "data").glob(pattern):
            lin = d / "lineage.json"
            if lin.is_file():
                total += json.loads(lin.read_text()).get("duration_s") or 0.0
    return total


def orchestrated(project: Path) -> float:
    env = {**os.environ, "DAGSTER_HOME": str(project / ".dagster_home"),
           "SSLOPS_PROJECT_DIR": str(project), "PATH": f"{BIN}:{os.environ['PATH']}"}  # fmt: skip
    (project / ".dagster_home").mkdir()
    (project / ".dagster_home/dagster.yaml").touch()
    t = time.perf_counter()
    r = subprocess.run(
        [str(BIN / "python"), "-m", "orchestration.pipeline"], cwd=ROOT, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"orchestrated run failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return wall


def direct(project: Path) -> float:
    t = time.perf_counter()
    run([sys.executable, "-c", DIRECT], project)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=("tiny", "demo"), default="tiny")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    demo = a.scale == "demo"
    res = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
           "scale": a.scale}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("orchestrated", orchestrated), ("direct", direct)):
            proj = make_tiny_project(Path(tmp) / name)
            if demo:  # the repository's own params (the demo sizes) instead of the tiny ones
                (proj / "params.yaml").write_text((ROOT / "params.yaml").read_text())
            wall = fn(proj)
            work = stage_seconds(proj)
            res[name] = {"wall_s": round(wall, 1), "stage_work_s": round(work, 1),
                         "other_s": round(wall - work, 1)}  # fmt: skip
            print(name, res[name], flush=True)
    o, d = res["orchestrated"], res["direct"]
    res["overhead_within_run_fraction"] = round(o["other_s"] / o["wall_s"], 4)
    res["wall_ratio_orchestrated_over_direct"] = round(o["wall_s"] / d["wall_s"], 3)
    print(json.dumps(res, indent=2))
    if a.no_write:
        return
    out = ROOT / "benchmarks/results" / f"orchestration_overhead_{a.scale}"
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"# Orchestration overhead ({a.scale} scale)\n\n"
        f"`benchmarks/orchestration_overhead.py --scale {a.scale}` on {res['machine']}, "
        f"{res['date']}.\n\n| run | wall s | stages' own work s | rest s |\n|---|---|---|---|\n"
        f"| Dagster + DVC + jobs | {o['wall_s']} | {o['stage_work_s']} | {o['other_s']} |\n"
        f"| direct calls, one process | {d['wall_s']} | {d['stage_work_s']} | {d['other_s']} |\n\n"
        f"Within the orchestrated run, {100 * res['overhead_within_run_fraction']:.1f} % of the "
        f"wall time is outside the stages' work (Dagster start-up and event handling, `dvc repro` "
        f"per stage and per check, a process per stage and per TorchX job). Orchestrated / direct "
        f"wall time: {res['wall_ratio_orchestrated_over_direct']} (the two runs ran one after "
        "the other on shared cores).\n"
    )


if __name__ == "__main__":
    main()
