"""Lineage records: every artifact says which code, parameters and inputs produced it."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from ssl_core.utils.atomic import write_json
from ssl_core.utils.hashing import hash_path, sha256_json

LINEAGE_FILE = "lineage.json"
#: set in a stage job's environment by the launcher; recorded so it can tell the job wrote it
JOB_ID_ENV = "SSLOPS_JOB_ID"
_LIBS = (
    "torch",
    "numpy",
    "polars",
    "faiss-cpu",
    "faiss-gpu-cu12",
    "great-expectations",
    "kornia",
    "sslops",
)


def git_sha(cwd: str | Path = ".") -> str:
    """Commit of the working tree (``+dirty`` when it has uncommitted changes); without a git
    checkout (a container image) ``$SSLOPS_GIT_SHA`` (baked in at build time), else
    ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("SSLOPS_GIT_SHA") or "unknown"


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def build_lineage(
    stage: str,
    params: dict[str, Any],
    inputs: dict[str, str | Path],
    seed: int | None = None,
    stats: dict[str, Any] | None = None,
    started: _dt.datetime | None = None,
) -> dict[str, Any]:
    now = _dt.datetime.now(_dt.UTC)
    return {
        "stage": stage,
        "git_sha": git_sha(),
        "params": params,
        "params_hash": sha256_json(params),
        "input_hashes": {name: hash_path(p) for name, p in inputs.items()},
        "seed": seed,
        "libraries": library_versions(),
        "finished_at": now.isoformat(),
        "duration_s": round((now - started).total_seconds(), 3) if started else None,
        "stats": stats or {},
        **({"job_id": os.environ[JOB_ID_ENV]} if os.environ.get(JOB_ID_ENV) else {}),
    }


def write_lineage(out_dir: str | Path, record: dict[str, Any]) -> Path:
    path = Path(out_dir) / LINEAGE_FILE
    write_json(path, record)
    return path
