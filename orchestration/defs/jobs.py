"""The graph as three jobs (``orchestration/pipeline.py`` says why and in which order) and a
weekly retraining schedule. DVC takes a repo lock, so steps run one at a time.

The schedule's cron, time zone and default state come from ``orchestration:`` in params.yaml
(:class:`ssl_core.orchestration_settings.OrchestrationConfig`), read when the code location
loads; see docs/operations.md.
"""

from __future__ import annotations

import dagster as dg

from orchestration.graph import GRAPH
from orchestration.pipeline import REPORT_JOB, STUDENTS_JOB, UPSTREAM_JOB
from orchestration.runner import project_dir
from ssl_core.orchestration_settings import OrchestrationConfig, load_orchestration


def settings() -> OrchestrationConfig:
    """``orchestration:`` of the project's params.yaml (defaults for missing keys)."""
    return load_orchestration(project_dir() / "params.yaml")


SETTINGS = settings()

#: the nodes before the partitioned ``students`` (each gated by its own check, in this job)
UPSTREAM = tuple(s.name for s in GRAPH[: [s.partitioned for s in GRAPH].index(True)])

upstream_job = dg.define_asset_job(
    UPSTREAM_JOB,
    selection=dg.AssetSelection.assets(*UPSTREAM),
    description="raw_pool → manifest → embeddings → dedup → clusters → curated → teacher, "
    "each with its blocking check; then the pipeline_chain sensor runs each student",
    executor_def=dg.in_process_executor,
)
students_job = dg.define_asset_job(
    STUDENTS_JOB,
    selection=dg.AssetSelection.assets("students").without_checks(),
    description="One student (a partition of students): only its folder is rewritten",
    executor_def=dg.in_process_executor,
)
report_job = dg.define_asset_job(
    REPORT_JOB,
    selection=dg.AssetSelection.assets("report") | dg.AssetSelection.checks_for_assets("students"),
    description="The students check (blocking: a failure skips the report), then report",
    executor_def=dg.in_process_executor,
)
JOBS = [upstream_job, students_job, report_job]

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=upstream_job,
    cron_schedule=SETTINGS.schedule_cron,
    execution_timezone=SETTINGS.schedule_timezone,
    default_status=dg.DefaultScheduleStatus.RUNNING
    if SETTINGS.schedule_enabled
    else dg.DefaultScheduleStatus.STOPPED,
    description="Periodic re-run (orchestration.schedule_cron in params.yaml) of ssl_upstream; "
    "the pipeline_chain sensor continues with the students and the report. DVC skips every "
    "stage whose inputs did not change.",
)

defs = dg.Definitions(jobs=JOBS, schedules=[weekly_retrain])
