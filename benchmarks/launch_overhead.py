"""What running a stage as a TorchX ``local_cwd`` job costs over running it in-process.

Side by side, alternating, in one run: the ``teacher`` stage on a generated 28 px pool
with the demo's recipe (tiny ViT, patch 7) capped at ``--steps`` steps, started either as
``sslops teacher`` (the CLI submits a job and waits; what DVC and Dagster run) or as
``python -c 'stages.train_teacher.run(load_params())'`` (the same stage function in the
calling process, as before jobs). Both are timed from process start to exit. The difference
is the fixed cost of a job (a second interpreter importing torch, the launcher's polling and
log streaming); the demo pays it three times (embeddings, teacher, students).

Usage::

    .venv/bin/python benchmarks/launch_overhead.py            # writes results/launch_overhead.*
    .venv/bin/python benchmarks/launch_overhead.py --repeats 1 --steps 5 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssl_core.config import load_params  # noqa: E402
from ssl_core.stages.curate import CURATED  # noqa: E402
from tests.unit.train.conftest import make_images  # noqa: E402

SSLOPS = str(Path(sys.executable).with_name("sslops"))
IN_PROCESS = (
    "from ssl_core.config import load_params; from ssl_core.stages import train_teacher; "
    "train_teacher.run(load_params('params.yaml'), progress=False)"
)
DEMO_WALL_S = 18 * 60 + 13  # README: make demo on 2 busy cores (the reference for the ratio)


def _project(tmp: Path, steps: int) -> Path:
    pool = tmp / "pool"
    names = make_images(pool, 640)
    proj = tmp / "proj"
    (proj / "data/curated").mkdir(parents=True)
    pl.DataFrame({"path": names}).write_parquet(proj / "data/curated" / CURATED)
    train = load_params(ROOT / "params.yaml").train.model_dump(mode="json")
    train.update(epochs=1, max_steps=steps, checkpoint_every=10_000)
    params = {
        "data": {"source": "folder", "labels": "none"},
        "paths": {"pool": str(pool)},
        "train": train,
        "launch": {"teacher": {"gpus": 0}},
    }
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([SSLOPS, "--quiet", "ingest"], cwd=proj, check=True, capture_output=True)
    return proj


def _timed(cmd: list[str], proj: Path) -> float:
    shutil.rmtree(proj / "data/teacher", ignore_errors=True)  # no resume: each run trains
    # the CLI and the job set OMP_WAIT_POLICY=PASSIVE before torch loads; without it the
    # in-process run was 2x slower on these busy cores (measured: 140-176 s vs 68-77 s)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=proj, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proj = _project(Path(tmp), a.steps)
        job, inproc = [], []
        for _ in range(a.repeats):  # alternate so that load drifts hit both alike
            inproc.append(_timed([sys.executable, "-c", IN_PROCESS], proj))
            job.append(_timed([SSLOPS, "--quiet", "teacher"], proj))
    overhead = statistics.median(job) - statistics.median(inproc)
    res = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "steps": a.steps,
        "in_process_s": [round(x, 2) for x in inproc],
        "local_cwd_job_s": [round(x, 2) for x in job],
        "overhead_per_job_s": round(overhead, 2),
        "ratio_job_over_in_process": round(statistics.median(job) / statistics.median(inproc), 3),
        "demo_overhead_fraction": round(3 * overhead / DEMO_WALL_S, 4),
    }
    print(json.dumps(res, indent=2))
    if a.no_write:
        return
    out = ROOT / "benchmarks/results"
    (out / "launch_overhead.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "launch_overhead.md").write_text(
        "# Launch overhead: a stage as a local_cwd TorchX job vs in-process\n\n"
        f"`{Path(sys.argv[0]).name}` on {res['machine']}, {res['date']}; teacher, demo "
        f"recipe, {a.steps} steps, {a.repeats} alternating runs each (process start to exit).\n\n"
        "| run | wall s (each) | median s |\n|---|---|---|\n"
        f"| in-process | {res['in_process_s']} | {statistics.median(inproc):.2f} |\n"
        f"| local_cwd job | {res['local_cwd_job_s']} | {statistics.median(job):.2f} |\n\n"
        f"Overhead per job: **{overhead:.2f} s** (job / in-process = "
        f"{res['ratio_job_over_in_process']}). The demo runs three jobs (embed, teacher, "
        f"distill): {3 * overhead:.1f} s, {100 * res['demo_overhead_fraction']:.2f} % of its "
        f"{DEMO_WALL_S / 60:.0f}-minute wall time (README).\n"
    )


if __name__ == "__main__":
    main()
