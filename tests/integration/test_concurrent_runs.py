"""Two runs against one artifact root, for real: ``sslops`` processes and a lock holder.

The holder is a real process holding the same lock a stage command takes (``stage_guard``), so
these tests do not depend on how long a stage takes; the second process is the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ssl_core.utils.runlock import EXIT_BUSY, read_holder
from tests.conftest import write_folder_params

SSLOPS = str(Path(sys.executable).with_name("sslops"))
HOLDER = """
import select, sys
from ssl_core.config import load_params
from ssl_core.stages.guard import stage_guard
with stage_guard(load_params("params.yaml"), "sslops holder-test", None, 0):
    print("locked", flush=True)
    select.select([sys.stdin], [], [], float(sys.argv[1]))  # a line on stdin releases early
"""


def _project(tmp: Path, pool: Path) -> Path:
    proj = tmp / "proj"
    write_folder_params(proj, pool)
    return proj


def _holder(proj: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(seconds)],
        cwd=proj, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _sslops(proj: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SSLOPS, "--quiet", *args], cwd=proj, capture_output=True, text=True, timeout=600,
        env={**os.environ, "SSLOPS_LOCK_WAIT": ""},
    )  # fmt: skip


def test_second_run_fails_fast_naming_the_holder(tmp_path, digits_pool):
    proj = _project(tmp_path, digits_pool)
    holder = _holder(proj, 120)
    try:
        r = _sslops(proj, "manifest")
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == EXIT_BUSY, r.stdout + r.stderr
    assert "data/.sslops.lock" in r.stderr and f"pid {holder.pid}" in r.stderr
    assert "sslops holder-test" in r.stderr and "--wait" in r.stderr
    assert not (proj / "data/manifest").exists()  # nothing written


def test_second_run_with_wait_proceeds_after_the_first(tmp_path, digits_pool):
    proj = _project(tmp_path, digits_pool)
    holder = _holder(proj, 300)
    waiter = subprocess.Popen(
        [SSLOPS, "--quiet", "--wait", "300", "manifest"], cwd=proj, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "SSLOPS_LOCK_WAIT": ""},
    )  # fmt: skip
    assert waiter.stderr is not None and holder.stdin is not None
    seen = []
    for line in waiter.stderr:  # the waiter says whom it waits for, then the holder lets go
        seen.append(line)
        if "waiting for the lock" in line:
            break
    holder.stdin.write("release\n")
    holder.stdin.flush()
    out, err = waiter.communicate(timeout=600)
    err = "".join(seen) + err
    assert holder.wait(timeout=60) == 0
    assert waiter.returncode == 0, out + err
    assert "waiting for the lock" in err and "holder-test" in err
    assert json.loads(out.strip().splitlines()[-1])["stage"] == "manifest"
    assert read_holder(proj / "data/.sslops.lock") is None  # released


def test_lock_of_a_killed_run_is_broken(tmp_path, digits_pool):
    proj = _project(tmp_path, digits_pool)
    holder = _holder(proj, 120)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    r = _sslops(proj, "manifest")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broke a stale lock" in r.stderr and f"pid {holder.pid}" in r.stderr


def test_stage_commands_in_sequence_each_take_and_release_the_lock(tmp_path, digits_pool):
    """What ``dvc repro`` or Dagster do: stage commands one after another, each taking the lock
    and letting it go, and a ``check`` after its stage."""
    proj = _project(tmp_path, digits_pool)
    for args in (["manifest"], ["check", "manifest"]):
        t0 = time.monotonic()
        r = _sslops(proj, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        assert time.monotonic() - t0 < 300
    assert read_holder(proj / "data/.sslops.lock") is None


def test_dagster_stage_commands_queue_behind_a_holder(tmp_path, digits_pool, monkeypatch):
    """The Dagster glue runs stage commands with ``SSLOPS_LOCK_WAIT=inf`` (unless set): a
    scheduled run that meets a manual one waits for it instead of failing."""
    from orchestration.runner import run_streaming, stage_env

    monkeypatch.setenv("SSLOPS_LOCK_WAIT", "0")
    assert stage_env()["SSLOPS_LOCK_WAIT"] == "0"  # the operator's choice wins
    monkeypatch.delenv("SSLOPS_LOCK_WAIT")
    assert stage_env()["SSLOPS_LOCK_WAIT"] == "inf"

    proj = _project(tmp_path, digits_pool)
    holder = _holder(proj, 3)
    lines: list[str] = []
    rc, _tail = run_streaming([SSLOPS, "--quiet", "manifest"], proj, lines.append)
    assert holder.wait(timeout=60) == 0
    assert rc == 0, "\n".join(lines)
    assert json.loads(lines[-1])["stage"] == "manifest"
