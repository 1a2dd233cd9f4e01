"""Running a stage from Dagster: through DVC (default) or straight through the CLI.

``dvc`` mode runs ``dvc repro --single-item <stage>``: DVC skips an up-to-date stage, records
hashes in ``dvc.lock``, and ``dvc status`` stays clean after a Dagster run (lock-step). The
Dagster process sends its ``dvc`` commands to one warm DVC worker
(:mod:`orchestration.dvc_calls`) instead of starting a ``dvc`` process for each.
``cli`` mode runs ``sslops <stage>`` (no DVC needed, e.g. inside a cluster job).

A GX check runs in this process instead (:func:`run_check`: the ``sslops check`` function under
the same lock, Great Expectations imported once per process rather than once per check); in
``dvc`` mode ``dvc commit --force check_<suite>`` then records it in ``dvc.lock`` exactly as
``dvc repro`` would have, so DVC, Dagster and the CLI stay in lock-step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

PROJECT_ENV = "SSLOPS_PROJECT_DIR"


def project_dir() -> Path:
    """The project root: ``$SSLOPS_PROJECT_DIR`` or the checkout this package lives in."""
    env = os.environ.get(PROJECT_ENV)
    return Path(env).resolve() if env else Path(__file__).resolve().parents[1]


def dvc_executable(root: Path) -> str:
    """``$SSLOPS_DVC``, the project's (or this checkout's) ``.venv-dvc/bin/dvc``, or ``dvc``
    on PATH."""
    checkout = Path(__file__).resolve().parents[1]
    candidates = (
        os.environ.get("SSLOPS_DVC"),
        *(str(r / ".venv-dvc" / "bin" / "dvc") for r in (root, checkout)),
    )
    for cand in candidates:
        if cand and Path(cand).is_file():
            return cand
    found = shutil.which("dvc")
    if not found:
        raise RuntimeError(
            "dvc not found: run `make setup` (installs DVC into .venv-dvc) or set SSLOPS_DVC, "
            "or use the runner in mode 'cli'"
        )
    return found


def stage_env() -> dict[str, str]:
    """Environment for stage subprocesses: this interpreter's bin dir first on PATH so that
    ``sslops`` (called by dvc.yaml commands) resolves to the same installation. A stage that
    finds another run holding the data folder's lock waits for it (a scheduled run queues
    behind a manual one) unless ``SSLOPS_LOCK_WAIT`` says otherwise (docs/reliability.md)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("SSLOPS_LOCK_WAIT", "inf")
    return env


def run_streaming(
    cmd: list[str], cwd: Path, log: Callable[[str], None], env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``cmd``, forwarding each stdout line to ``log``; returns (exit code, stdout tail).

    stderr is inherited: progress bars and job log lines reach the terminal (``make demo``) or
    Dagster's captured compute logs live, while stdout (stage results, job status lines, GX
    summaries, errors) becomes Dagster log events.

    The command runs in its own process group. If this process is interrupted (Ctrl-C, or
    Dagster terminating the run), the whole group gets SIGTERM, so a stage that runs a TorchX
    job cancels it (``ssl_core.launch.launcher``), then SIGKILL after ``STOP_GRACE_S``.
    """
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**stage_env(), **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    tail: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                log(line)
                tail = (tail + [line])[-40:]
        return proc.wait(), "\n".join(tail)
    except BaseException:
        for line in stop_group(proc).splitlines():  # e.g. "job ...: interrupted: cancelling"
            if line.strip():
                log(line.rstrip())
        raise


STOP_GRACE_S = 90.0  # the launcher waits up to 60 s for a cancelled job to end


def stop_group(proc: subprocess.Popen) -> str:
    """SIGTERM the process group of ``proc``; SIGKILL it if still alive after the grace.
    Returns what it wrote to stdout meanwhile."""
    out = ""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            out += proc.communicate(timeout=wait)[0] or ""
            break
        except subprocess.TimeoutExpired:
            continue
    return out


def repro_argv(dvc_stage: str) -> list[str]:
    """The ``dvc`` arguments that run one stage (``dvc`` mode)."""
    return ["repro", "--single-item", dvc_stage]


def stage_command(
    mode: str, root: Path, dvc_stage: str, cli: tuple[str, ...], params_file: str
) -> list[str]:
    if mode == "dvc":
        return [dvc_executable(root), *repro_argv(dvc_stage)]
    if mode == "cli":
        return [
            str(Path(sys.executable).parent / "sslops"),
            "--quiet",
            "--params",
            params_file,
            *cli,
        ]
    raise ValueError(f"unknown runner mode {mode!r}: use 'dvc' or 'cli'")


def dvc_lock_hashes(root: Path, dvc_stage: str) -> dict[str, str]:
    """Output hashes DVC recorded for ``dvc_stage`` (``name`` or ``dir/dvc.yaml:name``) in the
    dvc.lock next to its pipeline file (empty if not locked)."""
    lock = root / "dvc.lock"
    if ":" in dvc_stage:
        file, dvc_stage = dvc_stage.rsplit(":", 1)
        lock = root / Path(file).with_suffix(".lock")
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {o["path"]: o.get("md5", "") for o in stages.get(dvc_stage, {}).get("outs", [])}


def lock_wait_s() -> float:
    """The artifact-lock wait of a stage started by the runner (:func:`stage_env`)."""
    raw = stage_env()["SSLOPS_LOCK_WAIT"].strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"SSLOPS_LOCK_WAIT={raw!r} is not a number of seconds (or inf)") from None


_PRELOAD: threading.Thread | None = None


def preload_checks() -> threading.Thread:
    """Import what :func:`run_check` needs (Great Expectations, ~3.5 s) on a background thread,
    once per process, so the import overlaps the stage subprocesses this process waits for
    instead of delaying the first check (``orchestration.pipeline.run_steps`` starts it: there
    every step runs in this process). Returns the thread; an import error surfaces again, with
    its traceback, when the check imports the same module."""
    global _PRELOAD
    if _PRELOAD is None:
        from ssl_core.quality.gx_adapter import preload

        def target() -> None:
            with contextlib.suppress(Exception):
                preload()

        _PRELOAD = threading.Thread(target=target, name="sslops-preload-gx", daemon=True)
        _PRELOAD.start()
    return _PRELOAD


def run_check(
    root: Path, params_file: str, suite: str, record: Callable[[], None] | None = None
) -> Any:
    """``sslops check <suite>`` in this process: the same stage function
    (:func:`ssl_core.stages.checks.run`) under the same artifact lock, run from ``root``.

    Why in-process: importing Great Expectations costs ~8 s per interpreter (measured,
    ``benchmarks/results/orchestration_overhead_tiny.md``); a check process paid it for every
    check, this process pays it once. ``record`` (e.g. ``dvc commit --force check_<suite>``)
    runs after a passing suite while the lock is still held, as ``dvc repro`` records a stage
    only when its command succeeded. Returns the :class:`SuiteResult`; raises what the CLI
    would turn into a non-zero exit (``ConfigError``, ``FileNotFoundError``, ``LockBusy``, …).
    """
    from ssl_core.config import load_params
    from ssl_core.stages import checks
    from ssl_core.stages.guard import command_line, stage_guard

    params_path = (root / params_file).resolve()
    argv = ["--params", str(params_path), "check", suite]
    with contextlib.chdir(root):  # params' paths are relative to the project, like the CLI's
        params = load_params(params_path)
        with stage_guard(params, command_line(argv), None, lock_wait_s()):
            result = checks.run(params, suite)
            if result.success and record is not None:
                record()
    return result
