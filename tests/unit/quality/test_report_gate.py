"""The report gate on the per-model metric files: a planted NaN, a planted missing metric and a
missing file fail it; the weak-student case still fails; a real report's files pass."""

from __future__ import annotations

import json

from ssl_core.config import Params
from ssl_core.eval.model_metrics import MODEL_METRICS_DIR, flat_model_metrics, write_model_metrics
from ssl_core.quality.suites import report_suite, required_model_metrics
from ssl_core.stages import checks

MODELS = {"raw_pixels": "pixels", "teacher": "vit", "student_tiny_student": "vit"}


def _params(tmp_path=None) -> Params:
    sections: dict = {"eval": {"min_student_fraction": 0.8, "ks": [10, 20]}}
    if tmp_path is not None:
        sections["paths"] = {"reports_dir": str(tmp_path / "reports"), "checks_dir": str(tmp_path)}
    return Params.model_validate(sections)


def _metrics(student_knn: float = 0.6) -> dict:
    accs = {"raw_pixels": 0.5, "teacher": 0.7, "student_tiny_student": student_knn}
    tokens = {"outlier_share": 0.0}
    return {
        "labels": True,
        "models": {m: {"role": m, "arch": a, "config": None} for m, a in MODELS.items()},
        "knn": {m: {"10": a, "20": a} for m, a in accs.items()},
        "linear": {
            m: {"cls": {"top1": 0.6}} | ({"cls4_avgpool": {"top1": 0.7}} if a != "pixels" else {})
            for m, a in MODELS.items()
        },
        "retrieval": {m: {"recall@1": 0.3, "recall@5": 0.6, "mAP": 0.2} for m in MODELS},
        "cost": {
            m: {"params_m": 1.0, "gflops_per_image": 0.1, "images_per_s": 9.0} for m in MODELS
        },
        "feature_health": {
            m: {"images": 8, "effective_rank": 4.0, "uniformity": -1.0}
            | ({"tokens": tokens} if a != "pixels" else {})
            for m, a in MODELS.items()
        },
    }


def _files(metrics: dict) -> dict[str, dict]:
    return {m: flat_model_metrics(metrics, m) for m in MODELS}


def _failed(result) -> set:
    return {(o.batch, o.expectation) for o in result.failures()}


MODEL_METRICS_FAIL = {("model_metrics", "expect_column_values_to_be_in_set")}


def test_complete_files_pass_and_required_keys_depend_on_arch_and_labels():
    m = _metrics()
    assert report_suite(m, _params(), _files(m)).success
    vit = required_model_metrics("vit", True, [10, 20])
    assert {"knn_top1_k10", "knn_top1_k20", "linear_cls4_avgpool_top1", "outlier_share"} <= set(vit)
    pixels = required_model_metrics("pixels", True, [10, 20])
    assert "outlier_share" not in pixels and "linear_cls4_avgpool_top1" not in pixels
    assert not any(k.startswith(("knn", "linear", "recall")) for k in required_model_metrics(
        "vit", False, [10]
    ))  # fmt: skip


def test_planted_nan_fails():
    m = _metrics()
    files = _files(m)
    files["teacher"]["recall_at_5"] = float("nan")  # only in the per-model file
    r = report_suite(m, _params(), files)
    assert _failed(r) == MODEL_METRICS_FAIL


def test_planted_missing_metric_and_missing_file_fail():
    m = _metrics()
    files = _files(m)
    del files["student_tiny_student"]["linear_cls4_avgpool_top1"]
    assert _failed(report_suite(m, _params(), files)) == MODEL_METRICS_FAIL
    files = _files(m)
    del files["raw_pixels"]
    assert _failed(report_suite(m, _params(), files)) == MODEL_METRICS_FAIL
    files = _files(m)
    files["teacher"]["knn_top1_k20"] = None  # not a number
    assert _failed(report_suite(m, _params(), files)) == MODEL_METRICS_FAIL


def test_weak_student_still_fails_with_complete_files():
    m = _metrics(student_knn=0.5)  # 0.5 / 0.7 = 71 % < 80 %
    assert _failed(report_suite(m, _params(), _files(m))) == {
        ("students_vs_teacher_knn_k20", "expect_column_values_to_be_between")
    }


def test_check_stage_reads_the_files_the_report_writes(tmp_path):
    params = _params(tmp_path)
    reports = tmp_path / "reports"
    m = _metrics()
    write_model_metrics(m, reports)
    (reports / "metrics.json").write_text(json.dumps(m))
    assert checks.MODEL_METRICS_DIR == MODEL_METRICS_DIR
    assert checks.run(params, "report").success
    path = reports / MODEL_METRICS_DIR / "teacher.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "map": float("nan")}))
    assert not checks.run(params, "report").success
    assert not json.loads((tmp_path / "report.json").read_text())["success"]


def test_students_are_gated_against_the_teacher_they_were_distilled_from():
    """With ``distill.teacher`` set, the report measures that model as ``distill_teacher``
    and the gate compares the students with it, not with the teacher stage's model."""
    m = _metrics(student_knn=0.65)  # 93 % of the teacher stage's 0.7
    params = _params().model_copy(
        update={"distill": _params().distill.model_copy(update={"teacher": "w/s14.pth"})}
    )
    missing = report_suite(m, params, None)  # distill_teacher was not measured
    assert ("models", "expect_column_values_to_be_in_set") in _failed(missing)
    m["knn"]["distill_teacher"] = {"10": 0.9, "20": 0.9}  # 0.65 / 0.9 = 72 % < 80 %
    m["feature_health"]["distill_teacher"] = m["feature_health"]["teacher"]
    failed = _failed(report_suite(m, params, None))
    assert {b for b, _ in failed} == {"students_vs_teacher_knn_k20"}
    assert report_suite(m, _params(), None).success  # the teacher stage's model: 93 % passes
