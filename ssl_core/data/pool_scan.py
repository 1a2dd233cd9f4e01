"""Cheap change detection for a raw pool: list and stat every file, hash only what is new or
whose stats moved.

A scan compares the pool with the previous scan's state, a map ``relative path → (size,
mtime_ns, ctime_ns, sha256)``. A file whose size and times are unchanged keeps its recorded
sha256 without being read (rsync's "quick check"); a new file, or one whose stats changed, is
hashed. So a change is reported only when content changed: touching a file re-hashes it and
reports nothing. ``ctime`` is kept because it cannot be set from user space: content replaced
with its old mtime restored (``cp -p``, ``rsync -t``) still gets re-hashed. Hashing can be cut
off at a deadline and resumed from the partial state (a large first scan spreads over several
calls: a Dagster sensor tick has 60 s).

The pool is only read: nothing here writes, moves or deletes anything in it. The state lives
under the caller's cache folder (:func:`save_state`), one JSON file per content digest
(per ``partial-…`` key for an unfinished scan).
The listing follows the ingest stage's rules (``ssl_core.data.manifest.list_pool``): every file
below the pool, hidden names (``.*``) skipped, symlinked folders not followed, FIFOs, sockets
and devices skipped, symlinks out of the pool (or to non-files) hashed by their target text,
never read; a pool that is a single file (parquet) is one entry. Any file name works, also
one that is not UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

STATE_VERSION = 1
UNREADABLE = "unreadable"  # sha256 of a file that vanished or could not be read mid-scan
KEEP_STATES = 4  # state files kept in the cache folder (the newest ones)
_CHUNK = 1 << 20

Stats = tuple[int, int, int]  # size, mtime_ns, ctime_ns
Entry = tuple[int, int, int, str | None]  # size, mtime_ns, ctime_ns, sha256 (None: pending)


@dataclass(frozen=True)
class PoolDiff:
    """What changed between two scans (relative paths, sorted)."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # content (sha256) differs
    removed: tuple[str, ...] = ()
    touched: tuple[str, ...] = ()  # stats moved, content identical: not a change
    hashed: int = 0  # files read this scan

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "removed": len(self.removed),
        }

    def examples(self, n: int = 3) -> dict[str, list[str]]:
        """Up to ``n`` paths of each kind of change (for run tags and logs)."""
        return {k: list(getattr(self, k)[:n]) for k in ("added", "changed", "removed")}


def list_files(pool: Path) -> dict[str, Stats]:
    """``relative path → (size, mtime_ns, ctime_ns)`` for every file of ``pool`` (sorted).

    Raises:
        FileNotFoundError: ``pool`` does not exist.
    """
    if pool.is_file():
        return {pool.name: _stats(pool)}
    if not pool.is_dir():
        raise FileNotFoundError(f"pool {pool} not found")
    out: dict[str, Stats] = {}
    cut = len(str(pool)) + 1  # DirEntry.path is str(pool) + os.sep + relative path
    stack = [str(pool)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.name.startswith("."):
                    continue  # hidden files and folders, as ingest skips them
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                    continue
                if not e.is_symlink() and not e.is_file(follow_symlinks=False):
                    continue  # FIFOs, sockets, devices: never opened (a FIFO blocks forever)
                try:
                    st = e.stat()
                except OSError:  # a dangling symlink: its own stats
                    st = e.stat(follow_symlinks=False)
                rel = e.path[cut:].replace(os.sep, "/")
                out[rel] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return dict(sorted(out.items()))


def _stats(path: Path) -> Stats:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _digest(path: Path, pool_real: Path) -> str:
    """sha256 of the file's content; for a symlink that leaves the pool or does not end at a
    regular file, of its target text instead (never read, as ingest never reads it)."""
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(pool_real) or not target.is_file():
            text = os.readlink(path).encode("utf-8", "surrogateescape")
            return "symlink:" + hashlib.sha256(text).hexdigest()
    return _sha256(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return UNREADABLE
    return h.hexdigest()


def scan(
    pool: str | Path, known: Mapping[str, Entry], deadline: float | None = None
) -> tuple[dict[str, Entry], int, bool]:
    """List ``pool`` and hash what ``known`` (a former scan's state, ``{}`` for none) cannot
    vouch for: new files, files whose stats moved, and files ``known`` left pending.

    Args:
        deadline: a ``time.monotonic()`` value; files still to hash past it are left pending
            (sha256 ``None``) so that a long first scan spreads over several calls. At least
            one file is hashed per call, so repeated calls always finish.

    Returns:
        The new state, the number of files read, and whether it is complete (nothing pending).
    """
    pool = Path(pool)
    base = pool.parent if pool.is_file() else pool
    pool_real = pool.resolve()
    state: dict[str, Entry] = {}
    hashed, complete = 0, True
    for rel, stats in list_files(pool).items():
        old = known.get(rel)
        if old is not None and old[3] is not None and tuple(old[:3]) == stats:
            state[rel] = (*stats, old[3])
        elif hashed and deadline is not None and time.monotonic() > deadline:
            state[rel], complete = (*stats, None), False
        else:
            state[rel] = (*stats, _digest(base / rel, pool_real))
            hashed += 1
    return state, hashed, complete


def diff(old: Mapping[str, Entry], new: Mapping[str, Entry], hashed: int = 0) -> PoolDiff:
    """Added, changed (sha256), removed and touched (stats only) files from ``old`` to ``new``
    (both complete states)."""
    both = sorted(set(old) & set(new))
    return PoolDiff(
        added=tuple(sorted(set(new) - set(old))),
        changed=tuple(r for r in both if old[r][3] != new[r][3]),
        removed=tuple(sorted(set(old) - set(new))),
        touched=tuple(r for r in both if old[r][3] == new[r][3] and old[r][:3] != new[r][:3]),
        hashed=hashed,
    )


def content_digest(state: Mapping[str, Entry]) -> str:
    """sha256 of the pool's content: sorted (path, sha256) pairs; file times do not enter."""
    h = hashlib.sha256()
    for rel in sorted(state):
        h.update(f"{rel}\t{state[rel][3]}\n".encode("utf-8", "surrogateescape"))  # any name
    return h.hexdigest()


def save_state(
    cache_dir: str | Path,
    pool: str | Path,
    state: Mapping[str, Entry],
    keep: tuple[str, ...] = (),
) -> str:
    """Write ``state`` to ``cache_dir/<key>.json`` (atomically) and drop all but the newest
    :data:`KEEP_STATES` state files, never those named in ``keep``.

    Returns:
        The key: the content digest of a complete state; ``partial-<sha256 of the state>`` of
        one with pending entries.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if any(e[3] is None for e in state.values()):
        key = "partial-" + hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
    else:
        key = content_digest(state)
    doc = {"version": STATE_VERSION, "pool": str(pool), "files": state}
    target = cache_dir / f"{key}.json"
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp, target)
    states = sorted(cache_dir.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in states[KEEP_STATES:]:
        if old != target and old.stem not in keep:
            old.unlink(missing_ok=True)
    return key


def load_state(cache_dir: str | Path, key: str, pool: str | Path) -> dict[str, Entry] | None:
    """The state saved under ``key`` for ``pool``; None if absent, unreadable, of another
    pool or another format version."""
    path = Path(cache_dir) / f"{key}.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if doc.get("version") != STATE_VERSION or doc.get("pool") != str(pool):
        return None
    return {rel: tuple(e) for rel, e in doc.get("files", {}).items()}
