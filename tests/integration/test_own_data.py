"""A user's own folder, end to end: the pool is never written (sha256, mode and mtime of every
file before and after), the demo builder never runs, labels are optional."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from orchestration.pipeline import steps
from tests.integration.own_pool import fingerprint, make_image_folder
from tests.integration.tiny_project import dagster_full_pass, dvc_bin, env, make_tiny_project, run

needs_dvc = pytest.mark.skipif(dvc_bin() is None, reason="DVC not installed (make setup)")


def _use_folder(project: Path, pool: Path, labels: str = "auto", **params) -> None:
    run(["sslops", "use-folder", "--pool", str(pool), "--labels", labels], project)
    if params:
        p = yaml.safe_load((project / "params.yaml").read_text())
        for section, values in params.items():
            p[section].update(values)
        (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def _assert_demo_never_ran(project: Path) -> None:
    assert not (project / "data" / "demo").exists()
    lock = project / "demo" / "dvc.lock"
    assert not lock.exists() or "raw_pool" not in lock.read_text()


@needs_dvc
def test_unlabelled_folder_outside_project_through_dagster(tmp_path):
    pool = make_image_folder(tmp_path / "my photos")
    before = fingerprint(pool)
    project = make_tiny_project(tmp_path / "proj")
    _use_folder(project, pool, cluster={"levels": "auto"}, curate={"target_size": "auto"})
    results = dagster_full_pass(project)
    assert len(results) == len(steps(["tiny_student"])) and all(r.success for r in results)
    assert fingerprint(pool) == before
    _assert_demo_never_ran(project)
    raw = results[0].asset_materializations_for_node("raw_pool")[0].metadata
    assert raw["files"].value == sum(1 for p in pool.rglob("*") if p.is_file())
    report = (project / "data/reports/report.md").read_text()
    assert "No labels in this run" in report and "Feature health" in report
    metrics = json.loads((project / "data/reports/metrics.json").read_text())
    assert metrics["labels"] is False and metrics["knn"] == {}
    assert metrics["feature_health"]["teacher"]["effective_rank"] > 1
    curated = json.loads((project / "data/curated/lineage.json").read_text())["stats"]
    assert curated["levels"] == [8] and curated["target_size"] == curated["selected"]
    assert "Data and pipelines are up to date" in run([dvc_bin(), "status", "dvc.yaml"], project)
    assert "Running stage" not in run([dvc_bin(), "repro"], project)  # DVC agrees: nothing to do
    assert fingerprint(pool) == before


@needs_dvc
def test_class_folders_inside_project_through_dvc_repro(tmp_path):
    project = make_tiny_project(tmp_path / "proj")
    pool = make_image_folder(project / "data" / "mypool", per_class=40, class_folders=True)
    before = fingerprint(pool)
    # 20 held-out images per class: a kNN bank the 3-step teacher can beat chance on
    _use_folder(project, Path("data/mypool"), data={"eval_fraction": 0.5})
    run([dvc_bin(), "repro"], project)
    assert fingerprint(pool) == before
    _assert_demo_never_ran(project)
    metrics = json.loads((project / "data/reports/metrics.json").read_text())
    assert metrics["labels"] is True and metrics["eval_set"]["classes"] == 10
    assert {"raw_pixels", "teacher", "student_tiny_student"} <= set(metrics["knn"])
    assert metrics["knn"]["raw_pixels"]["20"] > 0.5  # digits are easy for raw pixels
    assert "kNN top-1" in (project / "data/reports/report.md").read_text()
    # the held-out eval images never reach training
    ev = pl.read_parquet(project / "data/manifest/eval_set.parquet")
    curated = pl.read_parquet(project / "data/curated/curated_manifest.parquet")
    assert ev.height > 0 and not set(ev["path"]) & set(curated["path"])
    assert "Running stage" not in run([dvc_bin(), "repro"], project)
    assert fingerprint(pool) == before


def test_labels_file_with_unknown_paths_fails_before_any_work(tmp_path):
    pool = make_image_folder(tmp_path / "pool", per_class=3)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nimg_0001.png,one\nnot/there.png,two\n")
    project = make_tiny_project(tmp_path / "proj", with_dvc=False)
    _use_folder(project, pool, str(labels))
    before = fingerprint(pool)
    with pytest.raises(AssertionError, match="not files of the pool"):
        run(["sslops", "manifest"], project)
    assert fingerprint(pool) == before
    assert not (project / "data/manifest").exists()


def _kill_when(cmd: list[str], cwd: Path, ready, timeout: float = 120.0) -> None:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` is true (polled), and wait for it."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"{cmd} finished before it could be killed"
            assert time.monotonic() < deadline, f"{cmd}: never reached the kill point"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_kill_during_ingest_then_rerun_leaves_pool_untouched(tmp_path):
    project = make_tiny_project(tmp_path / "proj", with_dvc=False)
    pool = make_image_folder(project / "data" / "mypool", per_class=120, class_folders=True)
    before = fingerprint(pool)
    _use_folder(project, Path("data/mypool"))
    # manifest reads every file; kill it once the per-stage log says it is under way
    log = project / "manifest.log"
    started = lambda: log.is_file() and "stage manifest: started" in log.read_text()  # noqa: E731
    _kill_when(["bash", "-c", "exec sslops manifest 2> manifest.log"], project, started)
    time.sleep(0.3)
    assert fingerprint(pool) == before
    run(["sslops", "manifest"], project)
    assert fingerprint(pool) == before
    manifest = pl.read_parquet(project / "data/manifest/raw_manifest.parquet")
    assert manifest.height == sum(1 for p in pool.rglob("*") if p.is_file())


@pytest.mark.usefixtures("fmnist_required")
def test_kill_during_demo_builder_leaves_a_user_folder_untouched(tmp_path):
    project = make_tiny_project(
        tmp_path / "proj", {"demo": {"max_per_class": 2000, "imbalance_ratio": 2}}, with_dvc=False
    )
    mine = make_image_folder(project / "data" / "mypool", per_class=5)  # not configured
    before = fingerprint(mine)
    demo = project / "data" / "demo"

    def building() -> bool:  # the atomic temp folder of the demo pool has files in it
        return demo.is_dir() and any(any(t.rglob("*.png")) for t in demo.glob(".pool.*.tmp"))

    _kill_when(["sslops", "raw_pool"], project, building)
    assert fingerprint(mine) == before
    assert not (demo / "pool").exists()  # a killed build never looks finished
    lines = run(["sslops", "raw_pool"], project).splitlines()
    out = json.loads(next(x for x in lines if x.startswith('{"stage"')))
    files = [p for p in (demo / "pool").rglob("*") if p.is_file()]
    assert len(files) == out["pool_files"]
    assert fingerprint(mine) == before
