"""One lock per artifact root, so that two runs never write the same stage outputs at once.

Every stage command (``sslops raw_pool`` ... ``sslops report``, ``sslops check``) takes the lock
file ``<data>/.sslops.lock`` (next to ``<data>/.jobs``) for as long as it runs, whoever calls
it: a terminal, ``dvc repro`` (which also holds DVC's own repo lock) or Dagster. A second run
against the same artifact root fails fast (exit code 75) with a message naming the holder
(pid, host, command, start time), or, with ``sslops --wait SECONDS`` (or ``SSLOPS_LOCK_WAIT``),
queues behind it.

How it works:

- ``fcntl.flock`` on the lock file: the kernel drops the lock when its holder dies, even by
  SIGKILL, so a killed run never blocks the next one. The holder's record (JSON: pid, host,
  command, start time, token) is written into the file after locking and erased on release; a
  record found on a lock that was free is a run that died: it is reported and overwritten.
- Child processes do not inherit the lock (Python opens files close-on-exec), so a TorchX job
  started by a stage (``python -m ssl_core.launch.job``) never waits for its parent's lock.
  A process started under a holder may still call stage commands (e.g. ``sslops hold-lock --
  dvc repro``): the holder's token is passed down in ``SSLOPS_LOCK_TOKEN``, and a command that
  finds the lock held with that token runs inside it instead of waiting for it.
- Filesystems without ``flock`` (some network mounts answer ENOLCK/EOPNOTSUPP): the record file
  ``<lock>.held`` is created with ``O_EXCL`` instead; a record whose pid no longer exists on
  this host is stale and is broken (renamed away, then deleted); one from another host cannot
  be checked and is reported with the command to remove it by hand.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import math
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = ".sslops.lock"
#: token of the lock held by an ancestor process (set for the holder's children)
TOKEN_ENV = "SSLOPS_LOCK_TOKEN"
#: seconds a stage command waits for the lock when ``--wait`` is not given (default 0: fail fast)
WAIT_ENV = "SSLOPS_LOCK_WAIT"
#: exit code of a command that did not get the lock (EX_TEMPFAIL: try again later)
EXIT_BUSY = 75
POLL_S = 0.25
NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LockBusy(RuntimeError):
    """Another run holds the artifact-root lock (and waiting, if asked, timed out)."""

    exit_code = EXIT_BUSY

    def __init__(self, message: str, path: Path, holder: dict[str, Any] | None):
        super().__init__(message)
        self.path, self.holder = path, holder


def wait_default() -> float:
    """``$SSLOPS_LOCK_WAIT`` seconds (``inf``: forever), else 0 (fail fast)."""
    raw = os.environ.get(WAIT_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else 0.0
    except ValueError:
        raise ValueError(f"{WAIT_ENV}={raw!r} is not a number of seconds (or inf)") from None


def describe(holder: dict[str, Any] | None) -> str:
    """``pid 12 on host h, running since 2026-01-01T10:00:00Z (3 min): sslops embed``."""
    if not holder:
        return "unknown (the holder has not written its record yet, or it was lost)"
    since = holder.get("started", "?")
    try:
        age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(since)
        since += f" ({_age(age.total_seconds())} ago)"
    except (TypeError, ValueError):
        pass
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, running since {since}: "
        f"{holder.get('command', '?')} (in {holder.get('cwd', '?')})"
    )


def _age(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def read_holder(path: str | Path) -> dict[str, Any] | None:
    """The holder record in ``path`` (lock file or ``.held`` file), or None if empty/unreadable."""
    for _ in range(3):  # the holder may be between truncate and write
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            return None
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            time.sleep(0.05)
    return None


def _record(command: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "cwd": os.getcwd(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }


def _busy(path: Path, holder: dict[str, Any] | None, waited: float, manual: str = "") -> LockBusy:
    waited_txt = f" after waiting {waited:.0f} s" if waited > 0 else ""
    msg = (
        f"another run holds the lock on this artifact root{waited_txt}: {path}\n"
        f"  holder: {describe(holder)}\n"
        "  wait for it to finish, or rerun with `sslops --wait SECONDS <command>` (or set "
        f"{WAIT_ENV}; inf waits forever) to queue behind it"
    )
    return LockBusy(msg + (f"\n  {manual}" if manual else ""), path, holder)


@contextlib.contextmanager
def artifact_lock(path: str | Path, command: str, wait_s: float = 0.0) -> Iterator[dict]:
    """Hold the lock file ``path`` while inside; yields the holder record.

    Args:
        path: the lock file (``<data>/.sslops.lock``); its folder is created if missing.
        command: what the holder runs, for the message others see (e.g. ``sslops embed``).
        wait_s: seconds to wait for a busy lock (0: fail at once; ``math.inf``: forever).

    Raises:
        LockBusy: the lock is held by another run (after ``wait_s``), naming the holder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError as e:
        raise PermissionError(
            e.errno,
            f"cannot open the lock file {path} for writing ({e.strerror}): everyone who runs "
            "stages on this data folder needs write access to it and its folder (e.g. a shared "
            f"group and `chmod g+w {path}`, umask 002)",
        ) from e
    try:
        mode = _flock(fd, path, wait_s)
        if mode == "inherited":
            yield read_holder(path) or {}
            return
        if mode == "no-flock":
            with _exclusive_file(path, command, wait_s) as rec:
                yield rec
            return
        yield from _hold(fd, path, command)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _flock(fd: int, path: Path, wait_s: float) -> str:
    """Take the flock on ``fd``: ``locked``, ``inherited`` (an ancestor holds it with our
    token) or ``no-flock`` (the filesystem cannot lock)."""
    deadline, told = time.monotonic() + wait_s, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return "locked"
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno in NO_FLOCK:
                log.warning("%s: the filesystem cannot flock (%s); using a record file", path, e)
                return "no-flock"
            raise
        holder = read_holder(path)
        token = os.environ.get(TOKEN_ENV)
        if token and holder and holder.get("token") == token:
            return "inherited"
        if time.monotonic() >= deadline:
            raise _busy(path, holder, wait_s if math.isfinite(wait_s) else 0.0)
        if not told:
            print(f"waiting for the lock {path}, held by {describe(holder)}", file=sys.stderr,
                  flush=True)  # fmt: skip
            told = True
        time.sleep(POLL_S)


def _hold(fd: int, path: Path, command: str) -> Iterator[dict]:
    previous = read_holder(path)
    if previous:  # its flock is gone, so its process is: a run that died without cleaning up
        log.warning("broke a stale lock %s left by a run that died: %s", path, describe(previous))
    rec = _record(command)
    try:
        _write_fd(fd, json.dumps(rec) + "\n")
    except OSError as e:  # e.g. a full disk: the flock holds anyway, others see no details
        log.warning("%s: could not write the holder record (%s); the lock is held", path, e)
    old_token = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = rec["token"]  # children may run stage commands inside this lock
    try:
        yield rec
    finally:
        _restore_env(old_token)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # released cleanly: an empty record


def _restore_env(old_token: str | None) -> None:
    if old_token is None:
        os.environ.pop(TOKEN_ENV, None)
    else:
        os.environ[TOKEN_ENV] = old_token


def _write_fd(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode("utf-8"), 0)
    with contextlib.suppress(OSError):
        os.fsync(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to another user
        return True
    return True


@contextlib.contextmanager
def _exclusive_file(path: Path, command: str, wait_s: float) -> Iterator[dict]:
    """The lock without flock: ``<path>.held`` created with O_EXCL holds the record."""
    held = path.with_name(path.name + ".held")
    got = _create_held(held, wait_s)
    if isinstance(got, dict):  # an ancestor holds it
        yield got
        return
    rec = _record(command)
    try:
        _write_fd(got, json.dumps(rec) + "\n")
    finally:
        os.close(got)
    old_token = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = rec["token"]
    try:
        yield rec
    finally:
        _restore_env(old_token)
        if (read_holder(held) or {}).get("token") == rec["token"]:
            held.unlink(missing_ok=True)


def _create_held(held: Path, wait_s: float) -> int | dict[str, Any]:
    """A new ``held`` file's descriptor, or the record of an ancestor that holds it."""
    deadline, host = time.monotonic() + wait_s, socket.gethostname()
    while True:
        try:
            return os.open(held, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pass
        holder = read_holder(held)
        token = os.environ.get(TOKEN_ENV)
        if token and holder and holder.get("token") == token:
            return holder
        if holder and holder.get("host") == host and not pid_alive(int(holder.get("pid", 0))):
            _break_stale(held, holder)
            continue
        if time.monotonic() >= deadline:
            manual = ""
            if holder and holder.get("host") != host:
                manual = f"held from another host; if that run is gone, remove it: rm {held}"
            raise _busy(held, holder, wait_s if math.isfinite(wait_s) else 0.0, manual)
        time.sleep(POLL_S)


def _break_stale(held: Path, holder: dict[str, Any]) -> None:
    """Move a dead holder's record away (one breaker wins the rename), then delete it."""
    aside = held.with_name(f"{held.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(held, aside)
    except FileNotFoundError:
        return  # another run broke it first
    if (read_holder(aside) or {}).get("token") != holder.get("token"):
        # between our read and the rename a live run took the lock: give its record back
        with contextlib.suppress(OSError):
            os.link(aside, held)
    else:
        log.warning("broke a stale lock %s: %s (that pid is gone)", held, describe(holder))
    aside.unlink(missing_ok=True)
