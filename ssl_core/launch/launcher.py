"""Submit a TorchX job, follow it to the end, and turn the outcome into a stage result.

One launcher for every scheduler: the scheduler and its run options come from ``launch:`` in
params.yaml. While the job runs, its log lines go to the terminal (stderr) and to ``job.log``
in the job's folder (next to the outputs, so on a cluster they outlive the pod); a status line
goes to stdout on every state change and every ``launch.heartbeat_s`` (Dagster turns stdout
lines into run-log events). Submission is retried with backoff on transient API errors. A job
that does not succeed raises :class:`JobFailed` quoting its last log lines and its app handle;
an interrupt (Ctrl-C, SIGTERM, a cancelled Dagster run) cancels the job before re-raising.
"""

from __future__ import annotations

import collections
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from torchx.runner import Runner, get_runner
from torchx.schedulers.api import Stream
from torchx.specs import AppDef, AppDryRunInfo, AppState, is_terminal

from ssl_core.launch.settings import LaunchConfig

TRANSIENT_HTTP = {429, 500, 502, 503, 504}
#: job log lines quoted first when a job fails (under torchrun the tail is its own traceback)
ERROR_LINE = re.compile(r"\(job\): error:|^\[?[\w.]*(Error|Exception)\b: ")
LOCAL_POLL_S = 0.1  # local_cwd status is a waitpid, not an API call: poll fast
MAX_STATUS_ERRORS = 20  # consecutive failed status polls before giving up on a job


class JobFailed(RuntimeError):
    """A job ended in a state other than SUCCEEDED (or could not be followed)."""

    def __init__(self, message: str, handle: str = "", state: str = "", tail: list[str] = ()):
        super().__init__(message)
        self.handle, self.state, self.tail = handle, state, list(tail)


class JobInterrupted(BaseException):
    """The stage process was asked to stop (SIGINT/SIGTERM) while its job ran."""


@dataclass
class JobResult:
    handle: str
    state: str
    wall_s: float
    log_path: Path
    lines: list[str] = field(default_factory=list)  # the last launch.log_tail_lines lines


def is_transient(err: BaseException) -> bool:
    """An API error worth retrying: throttling, a server error, a dropped connection."""
    status = getattr(err, "status", None)  # kubernetes.client.ApiException
    if isinstance(status, int) and status in TRANSIENT_HTTP:
        return True
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error
    except ImportError:  # pragma: no cover - urllib3 comes with the kubernetes client
        Urllib3Error = ()  # noqa: N806
    return isinstance(err, ConnectionError | TimeoutError | Urllib3Error)


def scheduler_cfg(runner: Runner, launch: LaunchConfig) -> dict[str, Any]:
    """Run options: ``launch.scheduler_args`` plus namespace/queue/service_account where the
    scheduler has such an option."""
    opts = runner.scheduler_run_opts(launch.scheduler)
    cfg: dict[str, Any] = {}
    for key in ("namespace", "queue", "service_account"):
        if opts.get(key) is not None:
            cfg[key] = getattr(launch, key)
    return {**cfg, **launch.scheduler_args}


def _submit(runner: Runner, info: AppDryRunInfo, launch: LaunchConfig, say: Callable) -> str:
    for attempt in range(launch.submit_retries + 1):
        try:
            return runner.schedule(info)
        except Exception as e:
            if attempt == launch.submit_retries or not is_transient(e):
                raise
            delay = min(30.0, 2.0**attempt)
            say(f"submit failed ({type(e).__name__}: {str(e)[:200]}); retry in {delay:.0f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`JobInterrupted` in the main thread while inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    raised = []

    def handler(signum: int, _frame: Any) -> None:
        if raised:  # a second Ctrl-C must not abort the cancellation of the job
            print("already stopping: cancelling the job", file=sys.stderr, flush=True)
            return
        raised.append(signum)
        raise JobInterrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _whole_lines(items: Iterable[str], partial: bool) -> Iterator[str]:
    """Log items as whole lines. ``local_cwd`` reads its log files in chunks, so an item that
    does not end in a newline is the start of a line (``partial``); other schedulers yield
    one line per item, with or without its newline."""
    buf = ""
    for item in items:
        if partial and not item.endswith("\n"):
            buf += item
            continue
        yield (buf + item).rstrip("\n")
        buf = ""
    if buf:
        yield buf


class _LogFollower:
    """Tails every replica's log in a thread; keeps the last lines and writes ``job.log``."""

    def __init__(self, runner: Runner, handle: str, app: AppDef, log_path: Path, echo: TextIO,
                 keep: int, partial: bool):  # fmt: skip
        self.runner, self.handle, self.echo, self.partial = runner, handle, echo, partial
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self.errors: collections.deque[str] = collections.deque(maxlen=5)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.file = log_path.open("a", encoding="utf-8")
        role = app.roles[0]
        multi = role.num_replicas > 1
        self.threads = [
            threading.Thread(
                target=self._follow,
                args=(role.name, k, f"[node {k}] " if multi else ""),
                daemon=True,
            )  # fmt: skip
            for k in range(role.num_replicas)
        ]
        for t in self.threads:
            t.start()

    def _follow(self, role: str, k: int, prefix: str) -> None:
        seen = 0  # a re-opened stream starts from the beginning: skip what was already shown
        while True:
            try:
                items = self.runner.log_lines(
                    self.handle, role, k, should_tail=True, streams=Stream.COMBINED
                )
                for n, line in enumerate(_whole_lines(items, self.partial), 1):
                    if n > seen:
                        seen = n
                        self._emit(prefix + line)
                return
            except Exception as e:  # pod not started yet, API hiccup: retry until the end
                if self.done.wait(2.0):
                    self._emit(f"{prefix}(log stream ended: {type(e).__name__}: {str(e)[:200]})")
                    return

    def _emit(self, line: str) -> None:
        with self.lock:
            self.tail.append(line)
            if ERROR_LINE.search(line):
                self.errors.append(line)
            self.file.write(line + "\n")
            self.file.flush()
            print(line, file=self.echo, flush=True)

    @property
    def last(self) -> str:
        with self.lock:
            return self.tail[-1] if self.tail else ""

    def close(self, timeout: float) -> list[str]:
        self.done.set()
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        with self.lock:
            self.file.close()
            return list(self.tail)


def _wait(runner: Runner, handle: str, launch: LaunchConfig, follower: _LogFollower,
          say: Callable) -> AppState:  # fmt: skip
    start, beat, state, errors = time.monotonic(), time.monotonic(), None, 0
    while True:
        try:
            status = runner.status(handle)
            errors = 0
        except Exception as e:
            errors += 1
            if errors >= MAX_STATUS_ERRORS or not is_transient(e):
                raise JobFailed(f"job {handle}: cannot read its status: {e}", handle) from e
            status = None
        if status is not None:
            if status.state != state:
                state = status.state
                say(f"{state.name} ({time.monotonic() - start:.0f}s)")
            if is_terminal(state):
                return state
        if time.monotonic() - beat >= launch.heartbeat_s:
            beat = time.monotonic()
            last = follower.last
            say(f"{state.name if state else 'UNKNOWN'} ({beat - start:.0f}s)" + (
                f" | {last[-160:]}" if last else ""))  # fmt: skip
        time.sleep(LOCAL_POLL_S if launch.on_host else launch.poll_interval_s)


def run_job(
    app: AppDef,
    launch: LaunchConfig,
    log_path: Path,
    patch: Callable[[AppDryRunInfo], None] | None = None,
    echo: TextIO | None = None,
    status_out: TextIO | None = None,
) -> JobResult:
    """Submit ``app`` to ``launch.scheduler``, follow it to the end and return its result.

    Args:
        app: the job (see :mod:`ssl_core.launch.component`).
        launch: scheduler, run options, retries, poll and heartbeat intervals.
        log_path: where the job's log lines are appended (the folder must exist).
        patch: edits the dry-run request before submission (e.g. pod security settings).
        echo: where job log lines are echoed (default stderr).
        status_out: where status lines go (default stdout).

    Raises:
        JobFailed: the job ended FAILED/CANCELLED/... (message quotes its last log lines).
        JobInterrupted: SIGINT/SIGTERM arrived; the job was cancelled first.
    """
    echo, status_out = echo or sys.stderr, status_out or sys.stdout
    t0 = time.monotonic()
    with get_runner() as runner:
        info = runner.dryrun(app, launch.scheduler, cfg=scheduler_cfg(runner, launch),
                             workspace=None)  # fmt: skip
        if patch is not None:
            patch(info)
        handle = ""

        def say(msg: str) -> None:
            print(f"job {handle or app.name}: {msg}", file=status_out, flush=True)

        with _interruptible():
            handle = _submit(runner, info, launch, say)
            say(f"submitted to {launch.scheduler}; log: {log_path}")
            follower = _LogFollower(
                runner, handle, app, log_path, echo, launch.log_tail_lines, launch.on_host
            )
            try:
                state = _wait(runner, handle, launch, follower, say)
            except BaseException:
                say("interrupted: cancelling the job")
                _cancel(runner, handle, launch)
                follower.close(timeout=5.0)
                raise
        tail = follower.close(timeout=30.0)
    result = JobResult(handle, state.name, time.monotonic() - t0, log_path, tail)
    if state != AppState.SUCCEEDED:
        quoted = "\n".join(f"  | {ln}" for ln in tail) or "  (no log lines)"
        errors = "".join(f"  ! {ln}\n" for ln in follower.errors)
        raise JobFailed(
            f"job {handle} ended {state.name}\n"
            + (f"errors it reported:\n{errors}" if errors else "")
            + f"last {len(tail)} log lines:\n{quoted}\nfull log: {log_path}",
            handle, state.name, tail,
        )  # fmt: skip
    return result


def _cancel(runner: Runner, handle: str, launch: LaunchConfig) -> None:
    """Cancel and wait (bounded) until the scheduler reports the job ended."""
    try:
        runner.cancel(handle)  # local_cwd: SIGTERM to the job's process group, SIGKILL after 10s
        end = time.monotonic() + 60.0
        while time.monotonic() < end:
            st = runner.status(handle)
            if st is None or is_terminal(st.state):
                return
            time.sleep(launch.poll_interval_s)
    except Exception as e:  # the stage fails anyway; say what could not be cleaned up
        print(f"job {handle}: cancel failed ({e}); stop it by hand", file=sys.stderr, flush=True)
