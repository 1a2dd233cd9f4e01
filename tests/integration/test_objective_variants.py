"""Issue 16: an XCiT teacher and a small-data-mode teacher each run through train → distill →
evaluate by changing params.yaml only (DVC reruns exactly the stages downstream of `train:`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.integration.tiny_project import TINY, dvc_bin, make_tiny_project, run

pytestmark = [
    pytest.mark.usefixtures("fmnist_required"),
    pytest.mark.skipif(dvc_bin() is None, reason="DVC not installed (make setup)"),
]


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _check_models(project: Path, preset: str, objective: str) -> None:
    cfg = json.loads((project / "data/teacher/config.json").read_text())
    assert (cfg["train"]["preset"], cfg["train"]["objective"]) == (preset, objective)
    knn = json.loads((project / "data/reports/metrics.json").read_text())["knn"]
    assert {"teacher", "student_tiny_student"} <= set(knn)
    for model in ("teacher", "student_tiny_student"):
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in knn[model].values())


def _set_train(project: Path, **values) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_xcit_then_splitmask_teacher_through_the_graph(tmp_path):
    xcit = {**TINY["train"], "preset": "xcit_demo", "patch_size": None}
    # 3-step teachers: the report's student-vs-teacher gate is not what this test is about
    gate_off = {"min_student_fraction": 0.0}
    project = make_tiny_project(tmp_path / "proj", {"train": xcit, "eval": gate_off})
    run([dvc_bin(), "repro"], project)
    _check_models(project, "xcit_demo", "dinov2")
    student = json.loads((project / "data/students/tiny_student/config.json").read_text())
    assert student["role"] == "student"

    curated = _files(project / "data/curated")
    _set_train(project, preset="tiny", patch_size=7, objective="splitmask")
    out = run([dvc_bin(), "repro"], project)
    assert out.count("Running stage") >= 3  # train, distill, evaluate (+ their checks)
    assert _files(project / "data/curated") == curated  # nothing upstream of train reran
    _check_models(project, "tiny", "splitmask")
    assert "Data and pipelines are up to date" in run([dvc_bin(), "status"], project)
