"""The whole graph on a tiny real pool: through Dagster (in-process, each asset running its
DVC stage), then DVC alone (nothing to redo; a param change reruns only downstream stages)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from orchestration.defs.assets import ASSETS
from orchestration.defs.checks import CHECKS
from orchestration.defs.resources import StageRunner
from orchestration.pipeline import steps, student_names
from tests.integration.tiny_project import dagster_full_pass, dvc_bin, make_tiny_project, run

pytestmark = pytest.mark.usefixtures("fmnist_required")


def _materialize(project: Path, mode: str, selection=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*ASSETS, *CHECKS],
        resources={"runner": StageRunner(mode=mode, project=str(project))},
        selection=selection,
        raise_on_error=False,
    )


def _full_pass(project: Path, mode: str) -> list[dg.ExecuteInProcessResult]:
    """The three jobs in order (``make demo``'s driver), on the tiny project."""
    results = dagster_full_pass(project, mode)
    students = student_names(project / "params.yaml")
    assert len(results) == len(steps(students)) and all(r.success for r in results)
    return results


@pytest.mark.skipif(dvc_bin() is None, reason="DVC not installed (make setup)")
def test_whole_graph_dagster_then_dvc(tmp_path):
    project = make_tiny_project(tmp_path / "proj")
    results = _full_pass(project, "dvc")
    mats = {
        e.asset_key.to_user_string()
        for r in results
        for e in r.get_asset_materialization_events()
        if hasattr(e, "asset_key")
    }
    assert mats == {
        "raw_pool",
        "manifest",
        "embeddings",
        "dedup",
        "clusters",
        "curated",
        "teacher",
        "students",
        "report",
    }
    checks = [
        e.event_specific_data
        for r in results
        for e in r.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert len(checks) == 6 and all(c.passed for c in checks)

    # Dagster metadata carries lineage; DVC is in lock-step
    md = results[0].asset_materializations_for_node("teacher")[0].metadata
    assert {"git_sha", "params_hash", "input_hashes", "dvc_out_md5"} <= set(md)
    assert "Data and pipelines are up to date" in run([dvc_bin(), "status"], project)
    out = run([dvc_bin(), "repro"], project)
    assert "Running stage" not in out
    _push_then_pull_into_a_fresh_clone(project, tmp_path)

    # broken files quarantined, report written for every model
    manifest_stats = json.loads((project / "data/manifest/lineage.json").read_text())["stats"]
    assert manifest_stats["quarantined"] == 4
    metrics = json.loads((project / "data/reports/metrics.json").read_text())
    assert {"raw_pixels", "teacher", "student_tiny_student"} <= set(metrics["knn"])
    assert metrics["curation"]["broken_files"] == {"planted": 4, "quarantined": 4}
    exact = metrics["curation"]["planted_duplicates"]["exact_duplicate"]
    assert exact["planted_groups"] > 0 and exact["resolved"] == exact["planted_groups"]
    for png in ("cluster_sizes.png", "cluster_samples.png", "class_distribution.png"):
        assert (project / "data/reports" / png).stat().st_size > 0

    # a curation parameter change reruns curate and everything downstream, nothing upstream
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["curate"]["target_size"] = 70
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run([dvc_bin(), "status", "--json"], project)
    changed = set(json.loads(status))
    assert "curated" in changed
    assert not changed & {"demo/dvc.yaml:raw_pool", "manifest", "embeddings", "dedup", "clusters"}


def test_failing_gx_check_blocks_downstream(tmp_path):
    project = make_tiny_project(
        tmp_path / "proj", {"ingest": {"max_quarantine_rate": 0.0}}, with_dvc=False
    )
    result = _materialize(project, "cli", selection=["raw_pool", "manifest", "embeddings"])
    assert not result.success
    mats = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert mats == {"raw_pool", "manifest"}
    evals = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert [c.passed for c in evals] == [False]
    assert evals[0].metadata["failed_expectations"].value == 1
    assert not (project / "data/embeddings").exists()


def _push_then_pull_into_a_fresh_clone(project: Path, tmp_path: Path) -> None:
    """Artifacts between machines: the default remote (a local folder in the repository's
    .dvc/config; here at a temp url) takes a push; a clone pulls it and has nothing to redo."""
    remote = tmp_path / "remote"
    run([dvc_bin(), "remote", "add", "-d", "sslops", str(remote)], project)
    run([dvc_bin(), "push"], project)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    run([*git, "add", "-A"], project)
    run([*git, "commit", "-q", "-m", "pipeline run"], project)  # dvc.lock files included
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "data/teacher").exists()
    run([dvc_bin(), "pull"], clone)
    assert (clone / "data/teacher/model.safetensors").is_file()
    assert "Data and pipelines are up to date" in run([dvc_bin(), "status"], clone)
    assert "Running stage" not in run([dvc_bin(), "repro"], clone)
