"""Students as partitions: one student re-materialised (Dagster partition, DVC ``foreach``
item) without touching another's files; the chain of runs that makes a full pass; the students
check gating the report in its own job; the report reading every student present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from orchestration.defs.assets import make_assets
from orchestration.defs.checks import CHECKS
from orchestration.defs.jobs import JOBS
from orchestration.defs.resources import StageRunner
from orchestration.defs.sensors import pipeline_chain
from orchestration.pipeline import (
    CHAIN_TAG,
    REPORT_JOB,
    STUDENTS_JOB,
    UPSTREAM_JOB,
    next_step,
    steps,
)
from tests.integration.tiny_project import TINY, dvc_bin, make_tiny_project, run

STUDENTS = ["tiny_student", "tiny"]  # two presets that fit the tiny teacher (patch 4)


def _defs(project: Path | None = None, mode: str = "dvc") -> dg.Definitions:
    runner = StageRunner(mode=mode, project=str(project or ""))
    return dg.Definitions(
        assets=make_assets(STUDENTS), asset_checks=CHECKS, jobs=JOBS, resources={"runner": runner}
    )


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: (bytes, mtime in ns)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- the order of a full pass and the chain sensor (no stage runs) ----------------------------


def test_a_full_pass_is_upstream_each_student_once_then_report():
    assert steps(STUDENTS) == [
        (UPSTREAM_JOB, None),
        (STUDENTS_JOB, "tiny_student"),
        (STUDENTS_JOB, "tiny"),
        (REPORT_JOB, None),
    ]
    assert next_step(STUDENTS, STUDENTS_JOB, "tiny") == (REPORT_JOB, None)
    assert next_step(STUDENTS, REPORT_JOB, None) is None
    assert next_step(STUDENTS, STUDENTS_JOB, "gone") is None  # removed from distill.students


def test_the_three_jobs_keep_each_gate_with_what_it_guards():
    defs = _defs()
    upstream = set(defs.resolve_job_def(UPSTREAM_JOB).graph.node_dict)
    students = defs.resolve_job_def(STUDENTS_JOB)
    report = set(defs.resolve_job_def(REPORT_JOB).graph.node_dict)
    assert {"teacher", "teacher_gx_teacher", "manifest_gx_manifest"} <= upstream
    assert "students" not in upstream and "report" not in upstream
    assert set(students.graph.node_dict) == {"students"}
    assert students.partitions_def.get_partition_keys() == STUDENTS
    assert report == {"students_gx_students", "report", "report_gx_report"}


def _chain_tick(defs: dg.Definitions, run: dg.DagsterRun) -> dg.RunRequest | dg.SkipReason:
    """One evaluation of the real ``pipeline_chain`` sensor for a successful ``run``."""
    instance = dg.DagsterInstance.ephemeral()

    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def done():
        noop()

    event = done.execute_in_process(instance=instance).get_run_success_event()
    ctx = dg.build_run_status_sensor_context(
        sensor_name="pipeline_chain",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        repository_def=defs.get_repository_def(),
    )
    return pipeline_chain(ctx)


def test_chain_sensor_requests_each_student_then_the_report():
    defs = _defs()
    upstream = dg.DagsterRun(job_name=UPSTREAM_JOB, run_id="up-1", tags={"sslops/trigger": "x"})
    first = _chain_tick(defs, upstream)
    assert (first.job_name, first.partition_key) == (STUDENTS_JOB, "tiny_student")
    assert first.tags[CHAIN_TAG] == "up-1" and first.tags["sslops/trigger"] == "x"

    tags = {CHAIN_TAG: "up-1", "dagster/partition": "tiny_student"}
    second = _chain_tick(defs, dg.DagsterRun(job_name=STUDENTS_JOB, run_id="s-1", tags=tags))
    assert (second.job_name, second.partition_key) == (STUDENTS_JOB, "tiny")
    tags = {CHAIN_TAG: "up-1", "dagster/partition": "tiny"}
    last = _chain_tick(defs, dg.DagsterRun(job_name=STUDENTS_JOB, run_id="s-2", tags=tags))
    assert (last.job_name, last.partition_key) == (REPORT_JOB, None)
    assert len({first.run_key, second.run_key, last.run_key}) == 3

    # a student re-materialised by hand (no chain tag) starts nothing
    alone = dg.DagsterRun(job_name=STUDENTS_JOB, run_id="s-3", tags={"dagster/partition": "tiny"})
    assert isinstance(_chain_tick(defs, alone), dg.SkipReason)
    # the last step ends the chain
    end = dg.DagsterRun(job_name=REPORT_JOB, run_id="r-1", tags={CHAIN_TAG: "up-1"})
    assert isinstance(_chain_tick(defs, end), dg.SkipReason)


def test_a_student_outside_distill_students_is_refused(tmp_path):
    from ssl_core.cli import main

    params = make_tiny_project(tmp_path / "p", with_dvc=False) / "params.yaml"
    assert main(["--params", str(params), "students", "--student", "small"]) == 2


# --- a real tiny project: partitions through Dagster + DVC, then DVC alone ------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny project with two students, built by DVC up to the checked teacher."""
    if dvc_bin() is None:
        pytest.skip("DVC not installed (make setup)")
    from tests.conftest import FMNIST

    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed")
    distill = {**TINY["distill"], "students": STUDENTS}  # a section override replaces TINY's
    proj = make_tiny_project(tmp_path_factory.mktemp("students") / "proj", {"distill": distill})
    run([dvc_bin(), "repro", "check_teacher"], proj)
    return proj


@pytest.mark.timeout(1800)  # five tiny trainings + a report on a shared 2-core machine
def test_one_partition_rematerialised_leaves_the_other_untouched(project):
    defs, instance = _defs(project), dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def(STUDENTS_JOB)
    for name in STUDENTS:
        assert job.execute_in_process(instance=instance, partition_key=name).success
    students = project / "data" / "students"
    other = _files(students / "tiny")
    assert "model.safetensors" in other and "lineage.json" in other
    before = _files(students / "tiny_student")

    shutil.rmtree(students / "tiny_student")  # lost: DVC restores (run cache) that one only
    again = job.execute_in_process(instance=instance, partition_key="tiny_student")
    assert again.success
    assert _files(students / "tiny") == other  # bytes and mtimes
    rebuilt = _files(students / "tiny_student")
    assert rebuilt.keys() == before.keys()
    assert rebuilt["lineage.json"][1] > before["lineage.json"][1]
    (mat,) = again.asset_materializations_for_node("students")
    assert mat.partition == "tiny_student"
    assert mat.metadata["dvc_stage"].value == "students@tiny_student"
    assert mat.metadata["output_path"].value == "data/students/tiny_student"
    assert "Data and pipelines are up to date" in run(
        [dvc_bin(), "status", "students@tiny", "students@tiny_student"], project
    )

    # the report job: the students check (blocking) then the report, over every student
    report = defs.resolve_job_def(REPORT_JOB).execute_in_process(instance=instance)
    assert report.success
    metrics = json.loads((project / "data/reports/metrics.json").read_text())
    assert {"student_tiny_student", "student_tiny"} <= set(metrics["knn"])

    # lineage on one student's model file
    out = run(["sslops", "lineage", "data/students/tiny/model.safetensors", "--json"], project)
    assert json.loads(out)["stages"] == ["students/tiny"]


def test_dvc_repro_of_one_student_reruns_only_it(project):
    students = project / "data" / "students"
    if not (students / "tiny_student" / "lineage.json").is_file():
        run([dvc_bin(), "repro", "students@tiny_student", "students@tiny"], project)
    other = _files(students / "tiny_student")

    shutil.rmtree(students / "tiny")  # lost: restored from DVC's cache, the other untouched
    out = run([dvc_bin(), "repro", "students@tiny"], project)
    assert "students@tiny'" in out and "students@tiny_student" not in out
    assert (students / "tiny" / "lineage.json").is_file()
    assert _files(students / "tiny_student") == other

    built = _files(students / "tiny")["lineage.json"]  # forced: the job really runs again
    out = run([dvc_bin(), "repro", "--force", "--single-item", "students@tiny"], project)
    assert "Running stage 'students@tiny'" in out and "students@tiny_student" not in out
    assert _files(students / "tiny")["lineage.json"] != built
    assert _files(students / "tiny_student") == other  # bytes and mtimes
    status = [dvc_bin(), "status", "students@tiny", "students@tiny_student"]
    assert "Data and pipelines are up to date" in run(status, project)


def test_adding_a_student_reruns_no_other(project):
    """``distill.students`` is not a param of the per-student stages: a new name is a new
    stage, the existing students stay up to date (``dvc status`` only, nothing runs)."""
    params_file = project / "params.yaml"
    before = params_file.read_text()
    params = yaml.safe_load(before)
    params["distill"]["students"] = [*STUDENTS, "xcit_demo"]
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = set(json.loads(run([dvc_bin(), "status", "--json"], project)))
    finally:
        params_file.write_text(before)
    assert "students@xcit_demo" in changed
    assert not {f"students@{s}" for s in STUDENTS} & changed
