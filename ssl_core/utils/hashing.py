"""Content hashes used for lineage and caching."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object with sorted keys (stable across runs)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode("utf-8"))


def hash_path(path: str | Path) -> str:
    """sha256 of a file, or of a directory's sorted (relative path, file hash) listing."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"cannot hash {path}: it does not exist")
    listing = [
        (p.relative_to(path).as_posix(), sha256_file(p))
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    ]
    return sha256_json(listing)


# -- size + sha256 records of cache entries ---------------------------------------------------
# A cache entry (an embedding shard, a k-means level, a training checkpoint) is one or more
# files plus a small JSON record of each file's size and sha256, written atomically after the
# files. A reader verifies the files against the record before using them: a missing record (a
# crash before it was written), a truncated file or a flipped byte makes the entry invalid, and
# the caller drops and recomputes it instead of reading it.

Digest = dict[str, int | str]


def file_digest(path: str | Path) -> Digest:
    """``{"size": bytes, "sha256": hex}`` of a file."""
    return {"size": Path(path).stat().st_size, "sha256": sha256_file(path)}


def write_record(record: str | Path, entries: dict[str, Digest | list[Digest]]) -> None:
    """Atomically write the record of files named (relative to the record's folder) in
    ``entries``; a list of digests means any of them is valid (a file about to be replaced)."""
    from ssl_core.utils.atomic import write_json

    as_lists = {k: v if isinstance(v, list) else [v] for k, v in entries.items()}
    write_json(record, {"version": 1, "files": as_lists})


def record_files(record: str | Path, files: list[str | Path]) -> None:
    """Hash ``files`` (siblings of ``record``) and write their record."""
    write_record(record, {Path(f).name: file_digest(f) for f in files})


def verify_record(record: str | Path) -> str | None:
    """None when every file of ``record`` exists with a recorded size and sha256; otherwise
    why not (no record, unreadable record, missing / truncated / altered file)."""
    record = Path(record)
    try:
        files = json.loads(record.read_text())["files"]
    except FileNotFoundError:
        return f"no size+hash record {record.name} (written after the entry: a crash cut it short)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable record {record.name}: {e}"
    for name, digests in files.items():
        path = record.parent / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        sizes = [d["size"] for d in digests]
        if size not in sizes:
            return f"{name} has {size} bytes, recorded {' or '.join(map(str, sizes))} (truncated?)"
        sha = sha256_file(path)
        if not any(d["size"] == size and d["sha256"] == sha for d in digests):
            return f"{name}: sha256 {sha[:12]}… differs from its record (corrupt)"
    return None
