"""Each GX suite on data that passes and on data that must fail."""

import polars as pl
import pytest

from ssl_core.config import IngestConfig, Params
from ssl_core.data.manifest import build_manifest
from ssl_core.quality.suites import curated_suite, dedup_suite, manifest_suite, training_suite
from ssl_core.stages.ingest import mark_exact_duplicates


@pytest.fixture
def manifest(digits_pool):
    return mark_exact_duplicates(build_manifest(digits_pool, IngestConfig(), progress=False))


def _params(**sections):
    return Params.model_validate(sections)


def _failed(result):
    return {(o.batch, o.expectation) for o in result.failures()}


def test_manifest_suite_passes(manifest):
    r = manifest_suite(manifest, _params(ingest={"max_quarantine_rate": 0.1}))
    assert r.success, r.summary()


def test_manifest_suite_fails_on_quarantine_rate(manifest):
    r = manifest_suite(manifest, _params(ingest={"max_quarantine_rate": 0.01}))
    assert not r.success
    assert _failed(r) == {("quarantine_rate", "expect_column_mean_to_be_between")}


def test_manifest_suite_fails_on_duplicate_kept_sha_and_schema(manifest):
    bad = manifest.with_columns(
        pl.when(pl.col("path") == "a/001.png")
        .then(pl.lit(manifest["sha256"][0]))
        .otherwise(pl.col("sha256"))
        .alias("sha256")
    )
    r = manifest_suite(bad, _params(ingest={"max_quarantine_rate": 0.1}))
    assert ("kept_rows", "expect_column_values_to_be_unique") in _failed(r)
    r2 = manifest_suite(manifest.drop("mode"), _params(ingest={"max_quarantine_rate": 0.1}))
    assert ("manifest", "expect_table_columns_to_match_set") in _failed(r2)


def _kept(sims):
    n = len(sims)
    return pl.DataFrame(
        {
            "path": [f"p{i}" for i in range(n)],
            "sha256": [f"{i:064x}" for i in range(n)],
            "emb_row": list(range(n)),
            "nearest_eval_path": ["e"] * n,
            "nearest_eval_sim": sims,
        }
    )


def test_dedup_suite_pass_and_leak(tmp_path):
    removed = pl.DataFrame(
        {
            "path": ["x"],
            "sha256": ["0" * 64],
            "reason": ["near_duplicate"],
            "nearest_path": ["p0"],
            "similarity": [0.999],
        }
    )
    eval_ids = pl.DataFrame(
        {"path": ["e0"], "label": [0], "split": ["query"], "sha256": ["e" * 64]},
        schema={"path": pl.String, "label": pl.Int64, "split": pl.String, "sha256": pl.String},
    )
    params = _params(
        dedup={"decontam_threshold": 0.95, "min_kept_fraction": 0.5},
    )
    assert dedup_suite(_kept([0.5, 0.9]), removed, eval_ids, 3, params).success
    leak = dedup_suite(_kept([0.5, 0.96]), removed, eval_ids, 3, params)
    assert _failed(leak) == {("kept", "expect_column_max_to_be_between")}
    copy = _kept([0.5, 0.9]).with_columns(sha256=pl.Series(["0" * 64, "e" * 64]))
    byte_copy = dedup_suite(copy, removed, eval_ids, 3, params)
    assert _failed(byte_copy) == {("eval_byte_copies_in_kept", "expect_table_row_count_to_equal")}
    too_few = dedup_suite(_kept([0.5]), removed, eval_ids, 10, params)
    assert _failed(too_few) == {("kept_fraction", "expect_column_values_to_be_between")}


def test_curated_suite_caps_size_and_quarantine(manifest, digits_pool):
    ok = manifest.filter(pl.col("status") == "ok").head(20)
    cur = ok.select("path", "sha256").with_columns(
        pl.Series("cluster_l0", [i % 4 for i in range(20)])
    )
    params = _params(
        paths={"pool": str(digits_pool)},
        cluster={"levels": [4]},
        curate={"target_size": 20, "min_cluster_entropy": 0.9},
    )
    stats = {"levels": [4], "target_size": 20}  # as the curate stage records them
    assert curated_suite(cur, manifest, {**stats, "top_level_cap": 5}, params).success
    # cap violated + wrong size + a quarantined, unreadable file slipped in
    q = manifest.filter(pl.col("status") == "quarantined").head(1).select("path", "sha256")
    bad = pl.concat([cur, q.with_columns(pl.lit(0, pl.Int64).alias("cluster_l0"))])
    r = curated_suite(bad, manifest, {**stats, "top_level_cap": 4}, params)
    failed = _failed(r)
    assert ("curated", "expect_table_row_count_to_equal") in failed
    assert ("status_in_manifest", "expect_column_values_to_be_in_set") in failed
    assert ("top_level_counts", "expect_column_max_to_be_between") in failed
    skewed = cur.with_columns(pl.Series("cluster_l0", [0] * 19 + [1]))
    r = curated_suite(skewed, manifest, {**stats, "top_level_cap": 20}, params)
    assert _failed(r) == {("top_level_entropy", "expect_column_values_to_be_between")}


def test_training_suite():
    good = {"final_loss": 5.0, "feature_std": 0.05, "knn_top1": 0.5, "chance": 0.1}
    assert training_suite(good, "t").success
    collapsed = {**good, "feature_std": 0.0, "knn_top1": 0.1}
    assert len(training_suite(collapsed, "t").failures()) == 2
    nan = {**good, "final_loss": float("nan")}
    assert not training_suite(nan, "t").success
    # no labels: the kNN probe did not run; the suite skips it instead of comparing 0 to 0
    unprobed = {**good, "knn_top1": 0.0, "chance": 0.0, "knn_probed": False}
    assert training_suite(unprobed, "t").success
    assert not training_suite({**unprobed, "knn_probed": True}, "t").success


def _metrics(student_knn: float = 0.6, labels: bool = True, rank: float = 12.0) -> dict:
    health = {"effective_rank": rank, "uniformity": -2.0, "images": 256}
    return {
        "labels": labels,
        "knn": {"teacher": {"10": 0.7, "20": 0.7}, "student_tiny_student": {"20": student_knn}}
        if labels
        else {},
        "feature_health": {"teacher": health, "student_tiny_student": health},
    }


def test_report_gate_passes_fails_on_weak_student_missing_model_and_nan():
    from ssl_core.quality.suites import report_suite

    params = _params(eval={"min_student_fraction": 0.8})
    assert report_suite(_metrics(0.6), params).success  # 0.6 / 0.7 = 86 %
    weak = report_suite(_metrics(0.5), params)  # 71 %: a planted weak student
    assert _failed(weak) == {("students_vs_teacher_knn_k20", "expect_column_values_to_be_between")}
    missing = _metrics(0.6)
    del missing["feature_health"]["student_tiny_student"]
    assert _failed(report_suite(missing, params)) == {
        ("models", "expect_column_values_to_be_in_set")
    }
    nan = report_suite(_metrics(0.6, rank=float("nan")), params)
    assert _failed(nan) == {("numbers", "expect_column_values_to_be_in_set")}
    assert report_suite(_metrics(0.6, rank=float("inf")), params).success  # e.g. max/min ratios
    # without labels only the label-free checks run
    assert report_suite(_metrics(labels=False), params).success
