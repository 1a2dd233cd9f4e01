"""Provenance rows: weights hash from the file, params / data hash and git sha from the
folder's lineage.json; what does not apply stays empty; report.md shows the table."""

from __future__ import annotations

import json

from ssl_core.eval.provenance import model_provenance, provenance_rows
from ssl_core.eval.report_md import _provenance
from ssl_core.utils.hashing import sha256_file


def test_folder_file_and_none(tmp_path):
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    lineage = {"params_hash": "p" * 64, "git_sha": "g" * 40, "input_hashes": {"curated": "c" * 64}}
    (folder / "lineage.json").write_text(json.dumps(lineage))
    p = model_provenance(folder)
    assert p == {
        "checkpoint_sha256": sha256_file(folder / "model.safetensors"),
        "params_hash": "p" * 64,
        "data_hash": "c" * 64,
        "git_sha": "g" * 40,
    }
    official = tmp_path / "dinov2_vits14.pth"
    official.write_bytes(b"released")
    bare = model_provenance(official)  # a bare release: its hash, no lineage
    assert bare["checkpoint_sha256"] == sha256_file(official)
    assert bare["params_hash"] is bare["git_sha"] is bare["data_hash"] is None
    assert set(model_provenance(None).values()) == {None}  # raw pixels, random init

    metrics = {"provenance": {"student_x": p, "raw_pixels": model_provenance(None)}}
    rows = provenance_rows(metrics)
    assert rows[0] == ["student_x", p["checkpoint_sha256"][:12], "p" * 12, "c" * 12, "g" * 12]
    assert rows[1] == ["raw_pixels", "–", "–", "–", "–"]
    md = "\n".join(_provenance(metrics))
    assert "## Provenance" in md and "| student_x | " + p["checkpoint_sha256"][:12] in md
