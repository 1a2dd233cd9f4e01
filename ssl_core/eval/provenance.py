"""Where each model of the report comes from: checkpoint hash, params hash, data hash, git sha.

Read from what the training stages already record (``lineage.json`` next to every trained
model: git commit, hash of the params sections the stage read, hashes of its inputs) plus the
sha256 of the weights file itself, so a row of the report can be traced to one file and one run
(``sslops lineage`` walks the rest of the way to the raw pool). Models without a folder (raw
pixels, the seeded random init) and bare checkpoints (an official release) get what applies.
"""

from __future__ import annotations

import json
from pathlib import Path

from ssl_core.lineage import LINEAGE_FILE
from ssl_core.utils.hashing import sha256_file

__all__ = ["PROVENANCE_HEADER", "model_provenance", "provenance_rows"]

PROVENANCE_HEADER = ["model", "checkpoint sha256", "params hash", "data hash (curated)", "git sha"]


def model_provenance(source: str | Path | None) -> dict[str, str | None]:
    """Provenance of the model at ``source`` (a model folder, a weights file, or None).

    Returns:
        ``checkpoint_sha256`` of the weights file, and from the folder's ``lineage.json`` (when
        there is one) ``params_hash``, ``data_hash`` (its curated input) and ``git_sha``; None
        where a field does not apply.
    """
    out: dict[str, str | None] = dict.fromkeys(
        ("checkpoint_sha256", "params_hash", "data_hash", "git_sha")
    )
    if source is None:
        return out
    path = Path(source)
    weights = path / "model.safetensors" if path.is_dir() else path
    if weights.is_file():
        out["checkpoint_sha256"] = sha256_file(weights)
    lineage = path / LINEAGE_FILE if path.is_dir() else None
    if lineage is not None and lineage.is_file():
        rec = json.loads(lineage.read_text())
        out["params_hash"] = rec.get("params_hash")
        out["data_hash"] = (rec.get("input_hashes") or {}).get("curated")
        out["git_sha"] = rec.get("git_sha")
    return out


def provenance_rows(metrics: dict) -> list[list[str]]:
    """One row per model of ``metrics["provenance"]`` (hashes shortened to 12 characters)."""

    def short(v: str | None) -> str:
        return v[:12] if v else "–"

    return [
        [name, *(short(p[k]) for k in ("checkpoint_sha256", "params_hash", "data_hash", "git_sha"))]
        for name, p in (metrics.get("provenance") or {}).items()
    ]
