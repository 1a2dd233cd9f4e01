"""Where each model of the report comes from: checkpoint hash, params hash, data hash, git sha.

Read from what the training stages already record (``lineage.json`` next to every trained
model: git commit, hash of the params sections the stage read, hashes of its inputs) plus the
sha256 of the weights file the report loaded (hashed by its embedder), so a row of the report can be traced to one file and one run
(``sslops lineage`` walks the rest of the way to the raw pool). Models without a folder (raw
pixels, the seeded random init) and bare checkpoints (an official release) get what applies.
"""

from __future__ import annotations

import json
from pathlib import Path

from ssl_core.lineage import LINEAGE_FILE

__all__ = ["PROVENANCE_HEADER", "model_provenance", "provenance_rows"]

PROVENANCE_HEADER = ["model", "checkpoint sha256", "params hash", "data hash (curated)", "git sha"]


def model_provenance(source: str | Path | None, checkpoint_sha256: str | None) -> dict:
    """Provenance of the model at ``source`` (a model folder, a weights file, or None).

    Args:
        source: Where the model was loaded from.
        checkpoint_sha256: sha256 of the weights file the report measured (the ``file_sha256``
            of its embedder's fingerprint: hashed once, when it was loaded), or None.

    Returns:
        ``checkpoint_sha256``, and from the folder's ``lineage.json`` (when there is one)
        ``params_hash``, ``data_hash`` (its curated input) and ``git_sha``; None where a field
        does not apply.
    """
    lineage = Path(source) / LINEAGE_FILE if source is not None else None
    rec = json.loads(lineage.read_text()) if lineage is not None and lineage.is_file() else {}
    return {
        "checkpoint_sha256": checkpoint_sha256,
        "params_hash": rec.get("params_hash"),
        "data_hash": (rec.get("input_hashes") or {}).get("curated"),
        "git_sha": rec.get("git_sha"),
    }


def provenance_rows(metrics: dict) -> list[list[str]]:
    """One row per model of ``metrics["provenance"]`` (hashes shortened to 12 characters)."""

    def short(v: str | None) -> str:
        return v[:12] if v else "–"

    return [
        [name, *(short(p[k]) for k in ("checkpoint_sha256", "params_hash", "data_hash", "git_sha"))]
        for name, p in (metrics.get("provenance") or {}).items()
    ]
