"""``dvc`` commands from the Dagster process, through one warm DVC worker per process.

:func:`run_dvc` sends each command to a long-lived ``dvc_worker.py`` running under DVC's own
interpreter (the one in the ``dvc`` script's ``#!`` line), so the ~0.8 s of interpreter start
and DVC imports is paid once per process instead of once per command. Output, exit codes,
environment and working folder are those of a ``dvc`` process; an interrupt stops the worker's
whole process group (the stage command and its TorchX job included), as it stopped the
``dvc`` process before. Where the interpreter cannot be found (a ``dvc`` that is not a Python
script), or with ``SSLOPS_DVC_WORKER=0``, each command runs as its own ``dvc`` process.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from orchestration.runner import dvc_executable, run_streaming, stage_env, stop_group

WORKER = Path(__file__).with_name("dvc_worker.py")
WORKER_ENV = "SSLOPS_DVC_WORKER"  # "0": a dvc process per command
MARK = "\x1esslops-dvc-worker-done"  # ends each request's output (never printed by DVC)
TAIL_LINES = 40


def script_python(script: str) -> str | None:
    """The interpreter a Python console script runs under (its ``#!`` line), if any."""
    try:
        with open(script, "rb") as f:
            first = f.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    exe = (first[2:].split() or [""])[0]  # "#!/usr/bin/env python3": not followed
    return exe if Path(exe).name.startswith("python") and os.access(exe, os.X_OK) else None


class DvcWorker:
    """One ``dvc_worker.py`` process, started on first use and again after it dies."""

    def __init__(self, python: str):
        self.python = python
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [self.python, "-I", "-u", str(WORKER), "--mark", MARK],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=stage_env(),
            text=True,
            start_new_session=True,  # an interrupt stops its group: DVC, the stage, its job
        )

    def call(
        self, argv: list[str], cwd: Path, log: Callable[[str], None], env: dict[str, str]
    ) -> tuple[int, str]:
        """``dvc <argv>`` in ``cwd`` with environment ``env``: (exit code, stdout tail)."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = self._start()
            proc = self.proc
            assert proc.stdin is not None and proc.stdout is not None
            tail: list[str] = []
            try:
                proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env}) + "\n")
                proc.stdin.flush()
                for line in proc.stdout:
                    line = line.rstrip()
                    if line.startswith(MARK):
                        return int(line[len(MARK) :].strip() or 1), "\n".join(tail)
                    if line:
                        log(line)
                        tail = (tail + [line])[-TAIL_LINES:]
            except BaseException:
                self.proc = None
                for line in stop_group(proc).splitlines():
                    if line.strip() and not line.startswith(MARK):
                        log(line.rstrip())
                raise
            self.proc = None  # output ended without the mark: the worker died
            code = proc.wait()
            tail.append(f"dvc worker exited with code {code} during: dvc {' '.join(argv)}")
            return code or 1, "\n".join(tail)

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.stdin.close()  # the worker ends at the end of its input
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            stop_group(proc)


_WORKERS: dict[str, DvcWorker] = {}
_WORKERS_LOCK = threading.Lock()


def _worker(python: str) -> DvcWorker:
    with _WORKERS_LOCK:
        if python not in _WORKERS:
            _WORKERS[python] = DvcWorker(python)
        return _WORKERS[python]


@atexit.register
def close_workers() -> None:
    """Stop every worker of this process (at exit; tests call it too)."""
    for w in list(_WORKERS.values()):
        w.close()


def run_dvc(
    root: Path,
    argv: list[str],
    log: Callable[[str], None],
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    """``dvc <argv>`` in ``root`` (the project's DVC, :func:`dvc_executable`): (exit code,
    stdout tail). stdout lines go to ``log``; stderr (progress bars) is inherited."""
    dvc = dvc_executable(root)
    python = script_python(dvc) if os.environ.get(WORKER_ENV, "1") != "0" else None
    if python is None:
        return run_streaming([dvc, *argv], root, log, env)
    return _worker(python).call(list(argv), root, log, {**stage_env(), **(env or {})})
