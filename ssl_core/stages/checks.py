"""Stage ``check <name>``: run a GX suite on a stage's outputs; write ``<checks_dir>/<name>.json``.

In DVC each check is its own stage whose JSON output the downstream stage depends on (a failed
check stops ``dvc repro``); in Dagster the same command backs a blocking asset check.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssl_core.config import Params
from ssl_core.data.eval_set import load_eval_set, training_candidates
from ssl_core.quality import suites
from ssl_core.quality.gx_adapter import SuiteResult
from ssl_core.stages.curate import CURATED
from ssl_core.stages.ingest import MANIFEST
from ssl_core.utils.atomic import write_json


def _manifest(params: Params) -> SuiteResult:
    return suites.manifest_suite(
        pl.read_parquet(Path(params.paths.manifest_dir) / MANIFEST), params
    )


def _dedup(params: Params) -> SuiteResult:
    d = Path(params.paths.dedup_dir)
    manifest = pl.read_parquet(Path(params.paths.manifest_dir) / MANIFEST)
    return suites.dedup_suite(
        pl.read_parquet(d / "kept.parquet"),
        pl.read_parquet(d / "removed.parquet"),
        pl.read_parquet(Path(params.paths.embeddings_dir) / "eval_ids.parquet"),
        training_candidates(params, manifest, load_eval_set(params)).height,
        params,
    )


def _curated(params: Params) -> SuiteResult:
    d = Path(params.paths.curated_dir)
    return suites.curated_suite(
        pl.read_parquet(d / CURATED),
        pl.read_parquet(Path(params.paths.manifest_dir) / MANIFEST),
        suites.read_json(d / "lineage.json")["stats"],
        params,
    )


def _teacher(params: Params) -> SuiteResult:
    return suites.training_suite(
        suites.read_json(Path(params.paths.teacher_dir) / "summary.json"), "teacher"
    )


def _students(params: Params) -> SuiteResult:
    results = [
        suites.training_suite(
            suites.read_json(Path(params.paths.students_dir) / name / "summary.json"),
            f"student_{name}",
        )
        for name in params.distill.students
    ]
    outcomes = [o for r in results for o in r.outcomes]
    return SuiteResult("students", all(r.success for r in results), outcomes)


MODEL_METRICS_DIR = "metrics"  # <reports_dir>/metrics/<model>.json (ssl_core.eval.model_metrics)


def _report(params: Params) -> SuiteResult:
    d = Path(params.paths.reports_dir)
    files = {p.stem: suites.read_json(p) for p in sorted((d / MODEL_METRICS_DIR).glob("*.json"))}
    return suites.report_suite(suites.read_json(d / "metrics.json"), params, files)


CHECKS = {
    "manifest": _manifest,
    "dedup": _dedup,
    "curated": _curated,
    "teacher": _teacher,
    "students": _students,
    "report": _report,
}


def run(params: Params, name: str) -> SuiteResult:
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; choose one of {sorted(CHECKS)}")
    result = CHECKS[name](params)
    write_json(Path(params.paths.checks_dir) / f"{name}.json", result.to_dict())
    return result
