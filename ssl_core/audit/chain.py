"""Walk a target's lineage up to the raw pool and check every recorded input hash against what
its upstream's output hashes to now (``hash_path``, exactly as ``build_lineage`` hashed it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_core.audit.graph import ALIASES, BY_ASSET, NODES, ORDER, Input, Node
from ssl_core.config import Params, section_dict
from ssl_core.lineage import LINEAGE_FILE
from ssl_core.utils.hashing import hash_path, sha256_json


class AuditError(ValueError):
    """A target that names no asset or output folder (the message lists the valid names)."""


@dataclass
class InputCheck:
    name: str
    recorded: str
    status: str  # consistent | mismatch | missing (file gone) | external | untraced
    asset: str | None = None  # the upstream asset that writes the file
    file: str | None = None
    current: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class StageAudit:
    key: str  # asset, or students/<name>
    node: Node
    folder: str
    status: str  # ran | not_run | input (a pool of your own: observed, never produced)
    record: dict[str, Any] = field(default_factory=dict)
    inputs: list[InputCheck] = field(default_factory=list)
    params_match_file: bool | None = None  # recorded params == those sections of params.yaml now

    @property
    def lineage_file(self) -> str:
        return str(Path(self.folder) / LINEAGE_FILE)

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "key": self.key,
            "asset": self.node.asset,
            "stage": self.node.asset,
            "folder": self.folder,
            "lineage": self.lineage_file if self.status == "ran" else None,
            "status": self.status,
            **{
                k: r.get(k)
                for k in ("git_sha", "params_hash", "finished_at", "duration_s", "seed", "job_id")
            },
            "job": r.get("job"),
            "params": r.get("params"),
            "params_match_file": self.params_match_file,
            "stats": r.get("stats"),
            "libraries": r.get("libraries"),
            "inputs": [i.to_dict() for i in self.inputs],
        }


def student_names(params: Params) -> list[str]:
    """Students configured in params.yaml or present on disk (a folder with a lineage.json)."""
    root = Path(params.paths.students_dir)
    on_disk = [p.parent.name for p in sorted(root.glob(f"*/{LINEAGE_FILE}"))]
    return list(dict.fromkeys([*params.distill.students, *on_disk]))


def valid_names(params: Params) -> list[str]:
    return [n.asset for n in NODES] + [f"students/{s}" for s in student_names(params)]


def _folder(params: Params, key: str) -> Path:
    asset, _, student = key.partition("/")
    base = Path(getattr(params.paths, BY_ASSET[asset].out_dir_key))
    return base / student if student else base


def _by_path(params: Params, target: str) -> list[str] | None:
    p = Path(target).resolve()
    if not p.exists():
        return None
    students = Path(params.paths.students_dir).resolve()
    if p.is_relative_to(students) and p != students:
        return [f"students/{p.relative_to(students).parts[0]}"]
    pool = Path(params.paths.pool).resolve()
    if p.is_relative_to(pool):
        return ["raw_pool"]
    for node in NODES:
        if p.is_relative_to(Path(getattr(params.paths, node.out_dir_key)).resolve()):
            return _expand(params, node.asset)
    return None


def _expand(params: Params, asset: str) -> list[str]:
    if asset == "students":
        return [f"students/{s}" for s in student_names(params)] or ["students"]
    return [asset]


def resolve(params: Params, target: str) -> list[str]:
    """Stage keys (asset, or ``students/<name>``) named by an asset name, alias, student name, or
    a path to an output folder or a file in it.

    Raises:
        AuditError: nothing matches; the message lists the valid names.
    """
    name = target.strip().rstrip("/")
    students = student_names(params)
    if name in BY_ASSET or name in ALIASES:
        return _expand(params, ALIASES.get(name, name))
    if name.startswith("students/") and name.split("/", 1)[1] in students:
        return [name]
    if name in students:
        return [f"students/{name}"]
    keys = _by_path(params, name)
    if keys is None:
        raise AuditError(
            f"{target!r} is neither an asset name nor a path inside a stage output folder; "
            f"valid names: {', '.join(valid_names(params))} (or a student name, or a path such "
            f"as {params.paths.teacher_dir}/model.safetensors)"
        )
    return keys


class _Hashes:
    """``hash_path`` once per file per audit (a model several stages read is hashed once)."""

    def __init__(self) -> None:
        self._seen: dict[Path, str | None] = {}

    def __call__(self, path: Path) -> str | None:
        if path not in self._seen:
            self._seen[path] = hash_path(path) if path.exists() else None
        return self._seen[path]


def _check(
    params: Params, name: str, recorded: str, origin: Input | None, hashes: _Hashes
) -> InputCheck:
    if origin is None:
        return InputCheck(name, recorded, "untraced")
    if origin.asset is None:
        return InputCheck(name, recorded, "external")
    path = Path(getattr(params.paths, origin.dir_key)) / origin.file
    now = hashes(path)
    status = "missing" if now is None else "consistent" if now == recorded else "mismatch"
    return InputCheck(name, recorded, status, origin.asset, str(path), now)


def _params_match(params: Params, record: dict[str, Any]) -> bool | None:
    try:
        return sha256_json(section_dict(params, *record["params"])) == record["params_hash"]
    except (AttributeError, KeyError, TypeError):
        return None


def audit_stage(params: Params, key: str, hashes: _Hashes) -> StageAudit:
    node = BY_ASSET[key.partition("/")[0]]
    folder = _folder(params, key)
    lin = folder / LINEAGE_FILE
    if not lin.is_file():
        own_pool = node.asset == "raw_pool" and params.data.source != "demo"
        folder = Path(params.paths.pool) if own_pool else folder
        return StageAudit(key, node, str(folder), "input" if own_pool else "not_run")
    record = json.loads(lin.read_text())
    checks = [
        _check(params, name, h, node.inputs.get(name), hashes)
        for name, h in sorted(record.get("input_hashes", {}).items())
    ]
    return StageAudit(key, node, str(folder), "ran", record, checks, _params_match(params, record))


def walk(params: Params, keys: list[str]) -> list[StageAudit]:
    """The targets and everything upstream of them, downstream first (raw pool last)."""
    hashes, seen, queue, out = _Hashes(), set(), list(keys), []
    while queue:
        key = queue.pop(0)
        if key in seen:
            continue
        seen.add(key)
        st = audit_stage(params, key, hashes)
        out.append(st)
        queue += st.node.upstream
    return sorted(out, key=lambda s: (-ORDER[s.node.asset], s.key))
