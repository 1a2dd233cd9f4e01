"""Provenance rows: the hash of the weights file the report loaded (its embedder's), params /
data hash and git sha from the folder's lineage.json; what does not apply stays empty;
report.md shows the table."""

from __future__ import annotations

import json

import torch

from ssl_core.curation.embed import make_embedder
from ssl_core.eval.provenance import model_provenance, provenance_rows
from ssl_core.eval.report_md import _provenance
from ssl_core.models.official import save_backbone
from ssl_core.models.presets import build_from_config, get_config
from ssl_core.stages.evaluate import _file_sha256
from ssl_core.utils.hashing import sha256_file


def _measured(source) -> str | None:
    """What the report passes: the hash of the file the embedder of ``source`` loaded."""
    return _file_sha256(make_embedder(str(source), 16))


def test_folder_file_and_none(tmp_path):
    folder = tmp_path / "student"
    folder.mkdir()
    torch.manual_seed(0)
    save_backbone(
        build_from_config(get_config("tiny_student", img_size=16)), folder / "model.safetensors"
    )
    lineage = {"params_hash": "p" * 64, "git_sha": "g" * 40, "input_hashes": {"curated": "c" * 64}}
    (folder / "lineage.json").write_text(json.dumps(lineage))
    p = model_provenance(folder, _measured(folder))
    assert p == {
        "checkpoint_sha256": sha256_file(folder / "model.safetensors"),
        "params_hash": "p" * 64,
        "data_hash": "c" * 64,
        "git_sha": "g" * 40,
    }
    official = tmp_path / "dinov2_vits14.safetensors"
    save_backbone(build_from_config(get_config("tiny", img_size=16)), official)
    bare = model_provenance(official, _measured(official))  # a bare release: its hash, no lineage
    assert bare["checkpoint_sha256"] == sha256_file(official)
    assert bare["params_hash"] is bare["git_sha"] is bare["data_hash"] is None
    pixels = model_provenance(None, _measured("pixels"))  # raw pixels, random init
    assert set(pixels.values()) == {None}

    metrics = {"provenance": {"student_x": p, "raw_pixels": pixels}}
    rows = provenance_rows(metrics)
    assert rows[0] == ["student_x", p["checkpoint_sha256"][:12], "p" * 12, "c" * 12, "g" * 12]
    assert rows[1] == ["raw_pixels", "–", "–", "–", "–"]
    md = "\n".join(_provenance(metrics))
    assert "## Provenance" in md and "| student_x | " + p["checkpoint_sha256"][:12] in md
