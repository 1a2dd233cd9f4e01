"""Atomic writes: every artifact is written to a temporary sibling and renamed into place.

A crash mid-write therefore leaves either the previous artifact or the new one, never a torn
file. Directories are swapped the same way so a stage's output folder is all-or-nothing.

``tempfile`` creates its files 0600 and folders 0700; before the rename they get the modes a
plain ``open``/``mkdir`` would have had under the process umask (0644/0755 under umask 022,
0640/0750 under 027), so a team, a web server or a pod with another uid can read the artifacts
as the umask allows. A write that fails (ENOSPC included) removes the temporary and renames
nothing, so the previous artifact stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ssl_core.utils.failpoints import failpoint

#: modes of a new file / folder before the umask is applied (what open() and mkdir() ask for)
FILE_MODE, DIR_MODE = 0o666, 0o777
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read from ``/proc/self/status`` (Linux) without changing it; elsewhere
    set and restored under a lock (``os.umask`` is the only portable reader)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
        return old


def umask_mode(directory: bool = False) -> int:
    """The mode the umask gives a new file (or folder): 0o644 (0o755) under umask 022."""
    return (DIR_MODE if directory else FILE_MODE) & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same directory; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, umask_mode())  # mkstemp made it 0600
        failpoint("atomic.before_replace")
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it into place on success.

    The previous directory (if any) is kept until the new one is complete, then removed, so a
    failed stage never leaves a half-written output folder behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, umask_mode(directory=True))  # mkdtemp made it 0700
        failpoint("atomic.dir_before_replace")
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
