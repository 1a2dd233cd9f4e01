"""The report asset's Dagster metadata: the markdown report (image lines left out, they are
files next to it) and a table with one row per model from ``metrics/<model>.json``."""

from __future__ import annotations

import json

import dagster as dg

from orchestration.defs.assets import report_metadata


def test_report_metadata_has_markdown_and_model_table(tmp_path):
    (tmp_path / "report.md").write_text(
        "# Evaluation report\n\n![teacher](attention_teacher.png)\n"
    )
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "teacher.json").write_text(
        json.dumps({"knn_top1_k20": 0.69, "params_m": 2.7})
    )
    (tmp_path / "metrics" / "raw_pixels.json").write_text(json.dumps({"knn_top1_k20": 0.79}))
    md = report_metadata(tmp_path)
    assert isinstance(md["report"], dg.MarkdownMetadataValue)
    assert "# Evaluation report" in md["report"].md_str and "![" not in md["report"].md_str
    table = md["report_table"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns] == ["model", "knn_top1_k20", "params_m"]
    rows = {r.data["model"]: r.data for r in table.records}
    assert rows["teacher"]["knn_top1_k20"] == 0.69 and rows["raw_pixels"]["params_m"] is None
