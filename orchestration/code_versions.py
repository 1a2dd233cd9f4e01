"""Code versions of the assets, derived from what each DVC stage tracks.

An asset's code version hashes the same inputs DVC uses to decide that its stage must rerun,
minus the data:

- **code**: the stage's ``cmd`` and its ``deps`` under ``ssl_core/`` in its pipeline file
  (``dvc.yaml``, or ``demo/dvc.yaml`` for ``raw_pool``); a file is hashed as is, a folder over
  its ``*.py`` files (sorted, recursively);
- **params**: the values of the stage's ``params:`` keys, read from ``params.yaml`` as DVC reads
  them (raw, not with ``ssl_core.config`` defaults filled in).

So "code version" means code + params here. Dagster marks an asset stale when its code version
differs from the one recorded at its last materialisation, or when an upstream data version
moved; with these versions, Dagster's stale flag and ``dvc status`` agree on code and params.
Nothing here imports Dagster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestration.graph import GRAPH
from ssl_core.utils.hashing import sha256_file, sha256_json

CODE_PREFIX = "ssl_core/"  # deps below this folder are code; the rest is data (or templated)
MISSING = "missing"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~7x faster on dvc.yaml


class _Reader:
    """Reads each YAML file and hashes each code path once per :func:`code_versions` call."""

    def __init__(self) -> None:
        self._yaml: dict[Path, Any] = {}
        self._hash: dict[Path, str] = {}

    def yaml(self, path: Path) -> Any:
        if path not in self._yaml:
            self._yaml[path] = (
                yaml.load(path.read_text(), Loader=_Loader) if path.is_file() else None
            )
        return self._yaml[path]

    def hash(self, path: Path) -> str:
        if path not in self._hash:
            self._hash[path] = hash_code(path)
        return self._hash[path]


def _stage(root: Path, dvc_stage: str, reader: _Reader) -> tuple[dict, Path, Path]:
    """The stage's definition, its working directory and its pipeline file."""
    file, _, name = dvc_stage.rpartition(":")
    pipeline = root / (file or "dvc.yaml")
    st = ((reader.yaml(pipeline) or {}).get("stages") or {}).get(name) or {}
    st = st.get("do", st)  # a foreach stage (students): every item runs the same code
    return st, (pipeline.parent / st.get("wdir", ".")).resolve(), pipeline


def code_deps(root: Path, dvc_stage: str, reader: _Reader | None = None) -> list[str]:
    """The stage's code dependencies (paths relative to its working directory, sorted)."""
    st, _, _ = _stage(root, dvc_stage, reader or _Reader())
    deps = (next(iter(d)) if isinstance(d, dict) else d for d in st.get("deps", []))
    return sorted({d.rstrip("/") for d in deps if d.startswith(CODE_PREFIX)})


def hash_code(path: Path) -> str:
    """sha256 of a file, or of a folder's sorted (relative path, sha256) list of ``*.py``."""
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        return sha256_json([(p.relative_to(path).as_posix(), sha256_file(p)) for p in files])
    return MISSING


def _lookup(raw: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return MISSING
        raw = raw[part]
    return raw


def stage_params(root: Path, dvc_stage: str, reader: _Reader | None = None) -> dict[str, Any]:
    """``{"<file>:<key>": value}`` for every ``params:`` key of the stage (DVC's default file
    is params.yaml in the stage's working directory)."""
    reader = reader or _Reader()
    st, wdir, _ = _stage(root, dvc_stage, reader)
    wanted: list[tuple[str, str]] = []
    for item in st.get("params", []):
        if isinstance(item, dict):  # {other.yaml: [keys]}
            wanted += [(f, k) for f, keys in item.items() for k in keys or []]
        else:
            wanted.append(("params.yaml", str(item)))
    return {f"{f}:{k}": _lookup(reader.yaml(wdir / f) or {}, k) for f, k in wanted}


def stage_code_version(root: Path, dvc_stage: str, reader: _Reader | None = None) -> str:
    """``code:<12 hex> params:<8 hex>`` for one stage (either half changes on its own)."""
    reader = reader or _Reader()
    st, wdir, pipeline = _stage(root, dvc_stage, reader)
    code = {d: reader.hash(wdir / d) for d in code_deps(root, dvc_stage, reader)}
    code["cmd"] = st.get("cmd", MISSING) if pipeline.is_file() else f"{pipeline}: {MISSING}"
    params = stage_params(root, dvc_stage, reader)
    return f"code:{sha256_json(code)[:12]} params:{sha256_json(params)[:8]}"


def code_versions(root: Path) -> dict[str, str]:
    """Asset name → code version, for every asset of :data:`orchestration.graph.GRAPH`."""
    root, reader = Path(root).resolve(), _Reader()
    return {s.name: stage_code_version(root, s.dvc_stage, reader) for s in GRAPH}
