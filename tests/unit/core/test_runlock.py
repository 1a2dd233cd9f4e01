"""The artifact-root lock on its own: real processes holding it, SIGKILL, no-flock filesystems."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssl_core.utils import runlock
from ssl_core.utils.runlock import LockBusy, artifact_lock, read_holder

HOLDER = """
import sys, time
from ssl_core.utils.runlock import artifact_lock
with artifact_lock(sys.argv[1], "sslops holder-test", 0):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def start_holder(lock: Path, seconds: float) -> subprocess.Popen:
    """A real process that takes ``lock`` and sleeps; returns once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked", "the holder did not take the lock"
    return proc


def test_second_taker_fails_fast_naming_the_holder(tmp_path):
    lock = tmp_path / "data" / ".sslops.lock"
    holder = start_holder(lock, 60)
    try:
        t0 = time.monotonic()
        with pytest.raises(LockBusy) as err, artifact_lock(lock, "sslops second", 0):
            pass
        assert time.monotonic() - t0 < 5  # fails fast
        msg = str(err.value)
        assert str(lock) in msg and f"pid {holder.pid}" in msg
        assert "sslops holder-test" in msg and socket.gethostname() in msg
        assert "running since" in msg and "--wait" in msg
        assert err.value.holder["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_waiting_taker_gets_the_lock_when_the_holder_ends(tmp_path):
    lock = tmp_path / ".sslops.lock"
    holder = start_holder(lock, 2)
    t0 = time.monotonic()
    with artifact_lock(lock, "sslops waiter", wait_s=60) as rec:
        assert time.monotonic() - t0 >= 1.0  # only once the holder let go (after its sleep)
        assert rec["pid"] == os.getpid() and read_holder(lock)["command"] == "sslops waiter"
    assert read_holder(lock) is None  # released cleanly: empty record
    assert holder.wait(timeout=30) == 0


def test_wait_times_out_with_the_holder_named(tmp_path):
    lock = tmp_path / ".sslops.lock"
    holder = start_holder(lock, 60)
    try:
        busy = pytest.raises(LockBusy, match=r"after waiting 1 s.*\n.*holder-test")
        with busy, artifact_lock(lock, "sslops waiter", wait_s=1.0):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_sigkilled_process_is_broken(tmp_path, caplog):
    lock = tmp_path / ".sslops.lock"
    holder = start_holder(lock, 60)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_holder(lock)["pid"] == holder.pid  # its record is still there...
    with caplog.at_level("WARNING"), artifact_lock(lock, "sslops next", 0) as rec:
        assert rec["pid"] == os.getpid()  # ...but the kernel released its flock
    assert "broke a stale lock" in caplog.text and f"pid {holder.pid}" in caplog.text


def test_child_of_the_holder_runs_inside_its_lock(tmp_path):
    """A command started under a holder (``dvc repro`` run by a holder, say) is not blocked by
    its ancestor: the token travels in the environment."""
    lock = tmp_path / ".sslops.lock"
    child = (
        "import sys; from ssl_core.utils.runlock import artifact_lock\n"
        "with artifact_lock(sys.argv[1], 'child', 0) as r: print(r['command'])"
    )
    with artifact_lock(lock, "parent", 0):
        out = subprocess.run(
            [sys.executable, "-c", child, str(lock)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "parent"  # it ran inside the parent's lock
    assert runlock.TOKEN_ENV not in os.environ
    # a stranger with a made-up token is still refused
    holder = start_holder(lock, 60)
    try:
        env = {**os.environ, runlock.TOKEN_ENV: "not-the-holders"}
        out = subprocess.run(
            [sys.executable, "-c", child, str(lock)], capture_output=True, text=True, env=env
        )
        assert out.returncode != 0 and "LockBusy" in out.stderr
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def no_flock(monkeypatch):
    """A filesystem that cannot flock (some network mounts): ENOLCK."""

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runlock.fcntl, "flock", refuse)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _held(lock: Path, **record) -> Path:
    held = lock.with_name(lock.name + ".held")
    held.parent.mkdir(parents=True, exist_ok=True)
    rec = {"host": socket.gethostname(), "command": "sslops old", "token": "t0", **record}
    held.write_text(json.dumps({"started": "2026-01-01T00:00:00+00:00", **rec}))
    return held


def test_no_flock_breaks_a_dead_local_holder(tmp_path, no_flock, caplog):
    lock = tmp_path / ".sslops.lock"
    dead = _dead_pid()
    held = _held(lock, pid=dead)
    with caplog.at_level("WARNING"), artifact_lock(lock, "sslops new", 0) as rec:
        assert read_holder(held)["token"] == rec["token"]
    assert not held.exists()  # released: the record file is removed
    assert f"pid {dead}" in caplog.text and "broke a stale lock" in caplog.text
    assert list(tmp_path.glob("*.stale-*")) == []


def test_no_flock_refuses_a_live_or_remote_holder(tmp_path, no_flock):
    lock = tmp_path / ".sslops.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        held = _held(lock, pid=sleeper.pid)
        with pytest.raises(LockBusy, match=f"pid {sleeper.pid}"), artifact_lock(lock, "x", 0):
            pass
        assert read_holder(held)["pid"] == sleeper.pid  # untouched
    finally:
        sleeper.kill()
        sleeper.wait()
    _held(lock, pid=_dead_pid(), host="another-host")  # cannot tell whether it lives
    busy = pytest.raises(LockBusy, match="another host; if that run is gone, remove it: rm")
    with busy, artifact_lock(lock, "sslops new", 0):
        pass


def test_wait_default_from_the_environment(monkeypatch):
    monkeypatch.delenv(runlock.WAIT_ENV, raising=False)
    assert runlock.wait_default() == 0.0
    monkeypatch.setenv(runlock.WAIT_ENV, "inf")
    assert math.isinf(runlock.wait_default())
    monkeypatch.setenv(runlock.WAIT_ENV, "soon")
    with pytest.raises(ValueError, match="SSLOPS_LOCK_WAIT"):
        runlock.wait_default()
