"""The warm DVC worker (orchestration/dvc_calls.py) behaves like a ``dvc`` process per command:
same output and exit codes, the caller's environment and folder, stdin closed to stages, and
an interrupt stops the stage it runs. Real DVC in a throw-away git + DVC repository."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from orchestration import dvc_calls
from tests.integration.tiny_project import dvc_bin, run

pytestmark = [
    pytest.mark.skipif(dvc_bin() is None, reason="dvc not installed (make setup)"),
    pytest.mark.timeout(300),  # a worker that hands stages its request pipe would hang
]

PY = sys.executable


def _repo(tmp_path: Path, stages: str) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    run(["git", "init", "-q"], root)
    run([dvc_bin(), "init", "-q"], root)
    run([dvc_bin(), "config", "core.analytics", "false"], root)
    (root / "dvc.yaml").write_text(textwrap.dedent(stages))
    return root


@pytest.fixture
def worker_dvc(monkeypatch: pytest.MonkeyPatch):
    """Calls go to a fresh worker of this test (closed afterwards)."""
    monkeypatch.setenv("SSLOPS_DVC", dvc_bin())
    monkeypatch.delenv(dvc_calls.WORKER_ENV, raising=False)
    assert dvc_calls.script_python(dvc_bin()), "the dvc script's interpreter is not found"
    dvc_calls.close_workers()
    dvc_calls._WORKERS.clear()
    yield
    dvc_calls.close_workers()
    dvc_calls._WORKERS.clear()


def _pid() -> int:
    (w,) = dvc_calls._WORKERS.values()
    assert w.proc is not None
    return w.proc.pid


def test_worker_matches_a_dvc_process(tmp_path: Path, worker_dvc, monkeypatch) -> None:
    root = _repo(
        tmp_path,
        f"""\
        stages:
          greet:
            cmd: {PY} -c "import os, sys; print('hello', os.environ.get('GREETING'), len(sys.stdin.read()))" > out.txt
            outs: [out.txt]
        """,  # noqa: E501
    )
    lines: list[str] = []
    rc, tail = dvc_calls.run_dvc(root, ["repro", "greet"], lines.append, {"GREETING": "warm"})
    assert rc == 0, tail
    assert any(line.startswith("Running stage 'greet'") for line in lines)
    # the caller's environment reached the stage; its stdin is empty, not the request pipe
    assert (root / "out.txt").read_text().strip() == "hello warm 0"
    pid = _pid()

    rc, tail = dvc_calls.run_dvc(root, ["status", "--json"], lines.append)
    assert (rc, tail.strip()) == (0, "{}")
    assert _pid() == pid  # the same process served both commands

    # a failing command: the exit code of a dvc process (1 here), and the worker lives on
    rc_warm, _ = dvc_calls.run_dvc(root, ["repro", "no_such_stage"], lines.append)
    monkeypatch.setenv(dvc_calls.WORKER_ENV, "0")
    rc_cold, _ = dvc_calls.run_dvc(root, ["repro", "no_such_stage"], lines.append)
    assert rc_warm == rc_cold != 0
    monkeypatch.delenv(dvc_calls.WORKER_ENV)
    # a usage error (argparse exits) is an exit code too
    rc, _ = dvc_calls.run_dvc(root, ["--no-such-flag"], lines.append)
    assert rc != 0 and _pid() == pid


def test_interrupt_stops_the_stage_and_a_new_worker_follows(tmp_path: Path, worker_dvc) -> None:
    root = _repo(
        tmp_path,
        f"""\
        stages:
          slow:
            cmd: {PY} -c "import os, time; open('pid', 'w').write(str(os.getpid())); time.sleep(120)"
          quick:
            cmd: echo quick
        """,
    )

    def log(line: str) -> None:
        if line.startswith("Running stage 'slow'"):
            deadline = time.monotonic() + 30
            while not (root / "pid").is_file() and time.monotonic() < deadline:
                time.sleep(0.05)
            raise KeyboardInterrupt  # what Ctrl-C or a terminated Dagster run raises

    with pytest.raises(KeyboardInterrupt):
        dvc_calls.run_dvc(root, ["repro", "slow"], log)
    stage_pid = int((root / "pid").read_text())
    deadline = time.monotonic() + 30
    while _alive(stage_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(stage_pid), "the stage outlived the interrupt"

    lines: list[str] = []
    rc, tail = dvc_calls.run_dvc(root, ["repro", "quick"], lines.append)
    assert rc == 0 and "quick" in lines, tail


def test_a_dead_worker_is_replaced(tmp_path: Path, worker_dvc) -> None:
    root = _repo(tmp_path, "stages:\n  a:\n    cmd: echo a\n")
    assert dvc_calls.run_dvc(root, ["status"], lambda _: None)[0] == 0
    pid = _pid()
    os.kill(pid, 9)
    for _ in range(50):
        (w,) = dvc_calls._WORKERS.values()
        if w.proc is not None and w.proc.poll() is not None:
            break
        time.sleep(0.1)
    rc, tail = dvc_calls.run_dvc(root, ["repro", "a"], lambda _: None)
    assert rc == 0, tail
    assert _pid() != pid


def test_concurrent_callers_are_serialised(tmp_path: Path, worker_dvc) -> None:
    root = _repo(tmp_path, "stages:\n  a:\n    cmd: echo a\n")
    codes: list[int] = []

    def call() -> None:
        codes.append(dvc_calls.run_dvc(root, ["status", "--json"], lambda _: None)[0])

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert codes == [0, 0, 0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as stopped
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
