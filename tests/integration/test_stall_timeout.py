"""A job that hangs is cancelled after ``launch.stall_timeout_s`` (real ``local_cwd`` jobs)."""

from __future__ import annotations

import os
import sys
import time

import pytest
from torchx import specs

from ssl_core.launch.launcher import JobStalled, run_job
from ssl_core.launch.settings import LaunchConfig
from tests.conftest import live_pids

HANGS = "print('loading the model', flush=True); import time; time.sleep(600)"
TICKS = "import time\nfor i in range(8):\n    print(f'step {i}', flush=True); time.sleep(0.5)\n"


def _app(code: str, name: str) -> specs.AppDef:
    role = specs.Role(
        name="stage",
        image="",
        entrypoint=sys.executable,
        args=["-c", code, name],  # the name marks the process for the check below
        resource=specs.Resource(cpu=1, gpu=0, memMB=256),
    )
    return specs.AppDef(name=name, roles=[role])


def _launch(stall: float) -> LaunchConfig:
    return LaunchConfig(poll_interval_s=0.2, heartbeat_s=1.0, stall_timeout_s=stall)


def test_silent_job_is_cancelled_and_the_stage_fails_quoting_it(tmp_path, capsys):
    marker = f"stall-test-{os.getpid()}-{time.monotonic_ns()}"
    t0 = time.monotonic()
    with pytest.raises(JobStalled) as err:
        run_job(_app(HANGS, marker), _launch(stall=3.0), tmp_path / "job.log")
    took = time.monotonic() - t0
    assert took < 90  # not the job's 600 s
    msg = str(err.value)
    assert "looks hung: no new log line for" in msg and "launch.stall_timeout_s = 3" in msg
    assert "loading the model" in msg  # its last lines
    assert str(tmp_path / "job.log") in msg and "raise launch.stall_timeout_s" in msg
    assert err.value.state == "STALLED"
    assert "cancelling the job" in capsys.readouterr().out
    time.sleep(1.0)
    assert live_pids(marker) == []  # the job's process is gone


def test_job_that_keeps_logging_is_not_stalled(tmp_path):
    """Eight lines 0.5 s apart (4 s in all) under a 2 s stall timeout: progress resets it."""
    marker = f"ticks-test-{os.getpid()}-{time.monotonic_ns()}"
    result = run_job(_app(TICKS, marker), _launch(stall=2.0), tmp_path / "job.log")
    assert result.state == "SUCCEEDED" and result.lines[-1] == "step 7"


def test_stall_timeout_default_is_generous():
    assert LaunchConfig().stall_timeout_s == 3600.0


def test_stage_whose_job_hangs_on_a_read_fails_naming_the_stage(tmp_path):
    """``sslops teacher`` whose job blocks forever opening one image (a FIFO stands in for a
    stuck network mount): the stage fails, names itself and the key to raise, and records it."""
    import json

    import polars as pl
    import yaml

    from tests.integration.test_launch_local import _job_dirs, _project, _sslops

    proj = _project(tmp_path)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["launch"]["stall_timeout_s"] = 30
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    os.mkfifo(tmp_path / "pool" / "stuck.png")
    curated = next((proj / "data/curated").glob("*.parquet"))
    paths = pl.read_parquet(curated)["path"].to_list()
    pl.DataFrame({"path": ["stuck.png", *paths]}).write_parquet(curated)

    r = _sslops(proj, "teacher")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "sslops teacher: error: job" in r.stdout and "looks hung" in r.stdout
    assert "launch.stall_timeout_s = 30" in r.stdout
    (job_dir,) = _job_dirs(proj, "teacher")
    assert json.loads((job_dir / "job.json").read_text())["state"] == "STALLED"
    time.sleep(1.0)
    assert live_pids(f"{job_dir.name}/params.yaml") == []  # the job's processes are gone
