"""Submit a TorchX job, follow it to the end, and turn the outcome into a stage result.

One launcher for every scheduler: the scheduler and its run options come from ``launch:`` in
params.yaml. While the job runs, its log lines go to the terminal (stderr) and to ``job.log``
in the job's folder (next to the outputs, so on a cluster they outlive the pod); a status line
goes to stdout on every state change and every ``launch.heartbeat_s`` (Dagster turns stdout
lines into run-log events). Submission is retried with backoff on transient API errors. A job
that does not succeed raises :class:`JobFailed` quoting its last log lines and its app handle;
a running job that writes nothing for ``launch.stall_timeout_s`` is cancelled (:class:`JobStalled`);
an interrupt (Ctrl-C, SIGTERM, a cancelled Dagster run) cancels the job before re-raising.
"""

from __future__ import annotations

import collections
import json
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
from torchx.specs import AppDef, AppDryRunInfo, AppState, is_terminal, make_app_handle

from ssl_core.launch.settings import LaunchConfig

TRANSIENT_HTTP = {429, 500, 502, 503, 504}
#: job log lines quoted first when a job fails (under torchrun the tail is its own traceback)
ERROR_LINE = re.compile(r"\(job\): error:|^\[?[\w.]*(Error|Exception)\b: ")
#: the time the Kubernetes API server puts before each log line (TorchX asks timestamps=true)
K8S_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ")
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


def brief_error(err: BaseException) -> str:
    """One line about an error: for an API error its HTTP status, reason and the server's
    message (``str()`` of a kubernetes ``ApiException`` is its response headers and body)."""
    status = getattr(err, "status", None)
    if isinstance(status, int):
        try:
            message = json.loads(getattr(err, "body", None) or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = ""
        head = f"HTTP {status} {getattr(err, 'reason', None) or ''}".strip()
        return f"{head}: {message}" if message else head
    return " ".join(f"{type(err).__name__}: {err}".split())[:300]


def already_exists(err: BaseException) -> bool:
    """A create refused with 409 (TorchX's kubernetes scheduler re-raises it as ValueError)."""
    return any(getattr(e, "status", None) == 409 for e in (err, err.__cause__))


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
            if attempt > 0 and launch.scheduler == "kubernetes" and already_exists(e):
                # an earlier attempt was committed after all (its answer was lost): the name
                # is unique to this dry-run, so the job is ours
                ns = (info._cfg or {}).get("namespace") or "default"
                name = info.request.resource["metadata"]["name"]
                say(f"submitted by an earlier attempt ({brief_error(e)})")
                return make_app_handle(launch.scheduler, runner.name(), f"{ns}:{name}")
            if attempt == launch.submit_retries or not is_transient(e):
                why = "not retried" if not is_transient(e) else f"{attempt + 1} attempts"
                raise JobFailed(
                    f"could not submit the job to {launch.scheduler} ({why}): {brief_error(e)}",
                    state="NOT_SUBMITTED",
                ) from e
            delay = min(30.0, 2.0**attempt)
            say(f"submit failed ({brief_error(e)}); retry in {delay:.0f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextmanager
def torchx_runner() -> Iterator[Runner]:
    """``get_runner()`` that leaves the process's SIGINT/SIGTERM handlers as they were
    (TorchX's local scheduler installs its own when created and never removes them)."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with get_runner() as runner:
            yield runner
    finally:
        if threading.current_thread() is threading.main_thread():
            for s, h in old.items():
                signal.signal(s, h)


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
        self.log_path = log_path
        self.activity = time.monotonic()  # when the job last wrote anything (stall detection)
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
        last_try = False
        while True:
            try:
                items = self.runner.log_lines(
                    self.handle, role, k, should_tail=True, streams=Stream.COMBINED
                )
                for n, line in enumerate(_whole_lines(items, self.partial), 1):
                    if n > seen:
                        seen = n
                        self._emit(prefix + line, K8S_STAMP.sub("", line, count=1))
                return
            except Exception as e:  # pod not started yet, API hiccup: retry until the end
                if last_try:
                    self._emit(f"{prefix}(log stream ended: {brief_error(e)})")
                    return
                # once the job has ended, one more read: its pods' logs are complete now
                last_try = self.done.wait(2.0)

    def _emit(self, line: str, text: str | None = None) -> None:
        """``line`` as shown and kept; ``text``: the job's own text (no prefix, no time)."""
        with self.lock:
            self.activity = time.monotonic()  # a new line (a re-read stream's old ones are not)
            self.tail.append(line)
            if ERROR_LINE.search(line if text is None else text):
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


class JobStalled(JobFailed):
    """A running job wrote no log line for ``launch.stall_timeout_s`` seconds."""


def _check_stall(handle: str, launch: LaunchConfig, follower: _LogFollower, since: float) -> None:
    """Raise :class:`JobStalled` when the running job has been silent for longer than
    ``launch.stall_timeout_s`` (run_job then cancels it)."""
    idle = time.monotonic() - max(follower.activity, since)
    if idle <= launch.stall_timeout_s:
        return
    with follower.lock:
        tail = list(follower.tail)
    quoted = "\n".join(f"  | {ln}" for ln in tail) or "  (no log lines)"
    raise JobStalled(
        f"job {handle} looks hung: no new log line for {idle:.0f} s while RUNNING "
        f"(launch.stall_timeout_s = {launch.stall_timeout_s:g}); it was cancelled.\n"
        f"last {len(tail)} log lines:\n{quoted}\nfull log: {follower.log_path}\n"
        "If the stage is only slow between log lines (one very long step, a slow first batch), "
        "raise launch.stall_timeout_s in params.yaml and rerun.",
        handle, "STALLED", tail,
    )  # fmt: skip


def _wait(runner: Runner, handle: str, launch: LaunchConfig, follower: _LogFollower,
          say: Callable) -> AppState:  # fmt: skip
    start, beat, state, errors = time.monotonic(), time.monotonic(), None, 0
    running_since = start
    while True:
        try:
            status = runner.status(handle)
            errors = 0
        except Exception as e:
            errors += 1
            if errors >= MAX_STATUS_ERRORS or not is_transient(e):
                msg = f"job {handle}: cannot read its status: {brief_error(e)}"
                raise JobFailed(msg, handle) from e
            status = None
        if status is not None:
            if status.state != state:
                state = status.state
                running_since = time.monotonic()
                say(f"{state.name} ({time.monotonic() - start:.0f}s)")
            if is_terminal(state):
                return state
            if state == AppState.RUNNING:
                _check_stall(handle, launch, follower, running_since)
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
        JobFailed: the job ended FAILED/CANCELLED/... (message quotes its last log lines);
            :class:`JobStalled` when it wrote nothing for ``launch.stall_timeout_s`` (cancelled).
        JobInterrupted: SIGINT/SIGTERM arrived; the job was cancelled first.
    """
    echo, status_out = echo or sys.stderr, status_out or sys.stdout
    t0 = time.monotonic()
    with torchx_runner() as runner:
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
            except BaseException as e:
                why = (
                    "interrupted" if isinstance(e, JobInterrupted | KeyboardInterrupt) else "failed"
                )
                say(f"{why}: cancelling the job")
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
            try:
                st = runner.status(handle)
            except Exception as e:
                if getattr(e, "status", None) == 404:  # deleted: the job object is gone
                    return
                raise
            if st is None or is_terminal(st.state):
                return
            time.sleep(launch.poll_interval_s)
    except Exception as e:  # the stage fails anyway; say what could not be cleaned up
        msg = f"job {handle}: cancel failed ({brief_error(e)}); stop it by hand"
        print(msg, file=sys.stderr, flush=True)
