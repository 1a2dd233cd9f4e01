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
