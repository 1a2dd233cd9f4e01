"""Stage jobs on TorchX's ``local_cwd`` scheduler, for real: a 2-process (gloo) training job,
a job that fails, and a job interrupted while it runs (its processes must be gone after)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from ssl_core.config import load_params
from ssl_core.stages import train_teacher as train_teacher_stage
from ssl_core.stages.curate import CURATED
from tests.conftest import live_pids
from tests.unit.train.conftest import OUTPUT_FILES, _tiny_train_cfg, make_images

SSLOPS = str(Path(sys.executable).with_name("sslops"))


def _project(tmp: Path, n_images: int = 64, nproc: int = 1, **train: object) -> Path:
    """A project folder: a pool outside it, no labels, a curated list, params for a tiny run."""
    pool = tmp / "pool"
    names = make_images(pool, n_images)
    proj = tmp / "proj"
    (proj / "data/curated").mkdir(parents=True)
    pl.DataFrame({"path": names}).write_parquet(proj / "data/curated" / CURATED)
    cfg = _tiny_train_cfg(**{"epochs": 1, "num_threads": 1, **train})
    params = {
        "data": {"source": "folder", "labels": "none"},
        "paths": {"pool": str(pool)},
        "train": cfg.model_dump(mode="json"),
        "launch": {
            "poll_interval_s": 0.2,
            "heartbeat_s": 2.0,
            "teacher": {"nproc_per_node": nproc, "gpus": 0},
        },
    }
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sslops(proj, "manifest")  # manifest + labels.json (no labels: no eval set)
    return proj


def _sslops(proj: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SSLOPS, "--quiet", *args], cwd=proj, capture_output=True, text=True, timeout=600, **kw
    )


def _job_dirs(proj: Path, stage: str) -> list[Path]:
    return sorted((proj / "data/.jobs").glob(f"{stage}-*"))


def test_two_process_job_writes_what_the_in_process_path_writes(tmp_path):
    proj = _project(tmp_path, nproc=2)
    r = _sslops(proj, "teacher")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "SUCCEEDED" in r.stdout and "local_cwd://" in r.stdout
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["stage"] == "teacher" and result["world_size"] == 2

    job_out = proj / "data/teacher"
    lineage = json.loads((job_out / "lineage.json").read_text())
    assert lineage["job"]["state"] == "SUCCEEDED"
    assert lineage["job"]["app_handle"].startswith("local_cwd://")
    (job_dir,) = _job_dirs(proj, "teacher")
    assert lineage["job_id"] == job_dir.name
    assert (job_dir / "params.yaml").read_text() == (proj / "params.yaml").read_text()
    assert "stage teacher:" in (job_dir / "job.log").read_text()  # log lines were streamed

    # the same stage in this process (world 1) writes the same files and lineage fields
    params = load_params(proj / "params.yaml")
    inproc = params.model_copy(
        update={"paths": params.paths.model_copy(update={"teacher_dir": str(tmp_path / "t1")})}
    )
    cwd = os.getcwd()
    os.chdir(proj)
    try:
        train_teacher_stage.run(inproc, progress=False)
    finally:
        os.chdir(cwd)
    files = {p.name for p in job_out.iterdir()}
    assert files == {p.name for p in (tmp_path / "t1").iterdir()}
    assert set(OUTPUT_FILES) <= files
    inproc_lineage = json.loads((tmp_path / "t1/lineage.json").read_text())
    assert set(lineage) - set(inproc_lineage) == {"job", "job_id"}
    assert lineage["params_hash"] == inproc_lineage["params_hash"]
    assert json.loads((job_out / "summary.json").read_text())["world_size"] == 2


def test_failing_job_fails_the_stage_and_quotes_its_log(tmp_path):
    proj = _project(tmp_path, n_images=8)  # fewer images than one batch of 16: the job fails
    r = _sslops(proj, "teacher")
    assert r.returncode == 1
    assert "ended FAILED" in r.stdout and "less than one batch" in r.stdout
    assert "local_cwd://" in r.stdout and "job.log" in r.stdout
    (job_dir,) = _job_dirs(proj, "teacher")
    assert json.loads((job_dir / "job.json").read_text())["state"] == "FAILED"
    assert not (proj / "data/teacher/lineage.json").exists()


def _job_pids(marker: str) -> list[int]:
    """Live job processes whose command line contains ``marker`` (not the sslops command)."""
    return live_pids(marker, exclude=("sslops --quiet",))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cancels_the_running_job(tmp_path, sig):
    proj = _project(tmp_path, epochs=500, nproc=2, collapse_patience=10**6)  # minutes of work
    proc = subprocess.Popen(
        [SSLOPS, "--quiet", "teacher"], cwd=proj, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        job_dir = _wait_for_training(proj)
        marker = f"{job_dir.name}/params.yaml"  # in the job command line
        assert len(_job_pids(marker)) >= 3  # torchrun + 2 ranks
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "job was cancelled" in out
    time.sleep(1.0)
    assert _job_pids(marker) == []
    assert json.loads((job_dir / "job.json").read_text())["state"].startswith("CANCELLED")


def _wait_for_training(proj: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dirs = _job_dirs(proj, "teacher")
        log = dirs[0] / "job.log" if dirs else None
        if log and log.is_file() and "stage teacher: started" in log.read_text():
            return dirs[0]
        time.sleep(0.5)
    raise AssertionError(f"the job did not start within {timeout} s")


def test_interrupted_orchestrator_cancels_the_job(tmp_path):
    """Dagster's path: the step running ``sslops`` is interrupted (a terminated run raises in
    the step); run_streaming stops the stage's process group and the stage cancels its job."""
    import _thread
    import threading

    from orchestration.runner import run_streaming

    proj = _project(tmp_path, epochs=500, collapse_patience=10**6)  # runs until interrupted
    # in-process Dagster runs of earlier tests can leave their own SIGINT handler installed
    # (it records the interrupt instead of raising): a Dagster step gets KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    seen: list[str] = []  # the stage's stdout lines, as Dagster logs them
    started: list[Path] = []

    def interrupt_when_training() -> None:
        started.append(_wait_for_training(proj))
        _thread.interrupt_main()

    t = threading.Thread(target=interrupt_when_training, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        run_streaming([SSLOPS, "--quiet", "teacher"], proj, seen.append)
    t.join(5)
    (job_dir,) = started
    assert _job_pids(f"{job_dir.name}/params.yaml") == []
    assert json.loads((job_dir / "job.json").read_text())["state"].startswith("CANCELLED")
    assert any("interrupted: cancelling the job" in s for s in seen)
