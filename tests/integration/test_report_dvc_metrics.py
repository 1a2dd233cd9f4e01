"""Real DVC reads the report's per-model metrics and plot data as ``dvc.yaml`` declares them.

A full tiny ``dvc repro`` takes minutes (tests/integration/test_end_to_end.py); here a git + DVC
project gets this repository's top-level ``metrics:``/``plots:`` sections and the files the
report stage writes (``write_model_metrics`` on a report-shaped metrics dict), then
``dvc metrics show`` and ``dvc plots show`` run on them (a few seconds).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ssl_core.eval.model_metrics import write_model_metrics
from tests.integration.tiny_project import REPO, dvc_bin, run

pytestmark = pytest.mark.skipif(dvc_bin() is None, reason="DVC not installed (make setup)")

MODELS = ("raw_pixels", "random_init_tiny", "teacher", "student_tiny_student")


def _metrics() -> dict:
    return {
        "labels": True,
        "knn": {m: {"10": 0.6 - i / 20, "20": 0.58 - i / 20} for i, m in enumerate(MODELS)},
        "linear": {m: {"cls": {"top1": 0.7}, "cls4_avgpool": {"top1": 0.72}} for m in MODELS},
        "retrieval": {m: {"recall@1": 0.5, "recall@5": 0.8, "mAP": 0.3} for m in MODELS},
        "cost": {
            m: {"params_m": p, "gflops_per_image": p / 10, "images_per_s": 99.0}
            for m, p in zip(MODELS, (0.0, 2.7, 2.7, 0.8), strict=True)
        },
        "feature_health": {
            m: {"effective_rank": 9.0, "uniformity": -2.0, "tokens": {"outlier_share": 0.01}}
            for m in MODELS
        },
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """git + DVC project with the repo's top-level metrics/plots and a written report."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump({"metrics": spec["metrics"], "plots": spec["plots"]})
    )
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run([dvc_bin(), "init", "-q"], tmp_path)
    reports = tmp_path / "data" / "reports"
    metrics = _metrics()
    write_model_metrics(metrics, reports)
    (reports / "metrics.json").write_text(json.dumps({"labels": True, "knn": metrics["knn"]}))
    (reports / "class_distribution.csv").write_text("subset,class,count\ncurated,0,5\n")
    return tmp_path


def test_dvc_metrics_show_lists_every_model(project: Path):
    shown = json.loads(run([dvc_bin(), "metrics", "show", "--json"], project))
    (rev,) = shown.values()  # "workspace" ("" before the first commit)
    files = rev["data"]
    for m in MODELS:
        data = files[f"data/reports/metrics/{m}.json"]["data"]
        assert data["knn_top1_k20"] == pytest.approx(_metrics()["knn"][m]["20"])
        assert {"linear_cls_top1", "recall_at_1", "map", "params_m", "outlier_share"} <= set(data)
    assert "data/reports/metrics.json" in files  # the stage's summary stays a metric


def test_dvc_plots_show_renders(project: Path):
    shown = json.loads(run([dvc_bin(), "plots", "show", "--json"], project))
    assert not shown.get("errors"), shown.get("errors")
    plots = shown["data"]
    for m in MODELS:
        (knn,) = plots[f"data/reports/plots/knn_vs_k/{m}.csv"]
        assert knn["type"] == "vega"
        assert [r["k"] for r in knn["content"]["data"]["values"]] == ["10", "20"]
    (acc,) = plots["data/reports/plots/accuracy_vs_params.csv"]
    fields = {r["field"] for r in acc["content"]["data"]["values"]}
    assert fields == {"knn_top1", "linear_cls_top1"}  # both accuracies against parameters
    out = run([dvc_bin(), "plots", "show", "-o", str(project / "html")], project)
    assert "index.html" in out and (project / "html" / "index.html").stat().st_size > 1000


def test_dvc_metrics_diff_shows_what_changed_per_model(project: Path):
    """Two commits, as two param settings would leave them: ``dvc metrics diff`` names the
    student's changed kNN and leaves the unchanged models out."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "a"], cwd=project, check=True)
    metrics = _metrics()
    metrics["knn"]["student_tiny_student"]["20"] = 0.66  # e.g. after a distill.target change
    write_model_metrics(metrics, project / "data" / "reports")
    diff = json.loads(run([dvc_bin(), "metrics", "diff", "--json"], project))
    changed = diff.get("diff", diff)  # DVC 3: {file: {metric: {old, new, diff}}}
    student = changed["data/reports/metrics/student_tiny_student.json"]["knn_top1_k20"]
    assert student["old"] == pytest.approx(0.43) and student["new"] == pytest.approx(0.66)
    assert "data/reports/metrics/teacher.json" not in changed  # unchanged models stay out
