"""The whole graph as one job (so blocking checks gate downstream steps), and a weekly
retraining schedule. DVC takes a repo lock, so steps run one at a time.

The schedule's cron, time zone and default state come from ``orchestration:`` in params.yaml
(:class:`ssl_core.orchestration_settings.OrchestrationConfig`), read when the code location
loads; see docs/operations.md.
"""

from __future__ import annotations

import dagster as dg

from orchestration.runner import project_dir
from ssl_core.orchestration_settings import OrchestrationConfig, load_orchestration


def settings() -> OrchestrationConfig:
    """``orchestration:`` of the project's params.yaml (defaults for missing keys)."""
    return load_orchestration(project_dir() / "params.yaml")


SETTINGS = settings()

pipeline_job = dg.define_asset_job(
    "ssl_pipeline",
    selection=dg.AssetSelection.groups("ssl_pipeline"),
    description="raw pool → manifest → embeddings → dedup → clusters → curated → teacher → students → reports",
    executor_def=dg.in_process_executor,
)

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=pipeline_job,
    cron_schedule=SETTINGS.schedule_cron,
    execution_timezone=SETTINGS.schedule_timezone,
    default_status=dg.DefaultScheduleStatus.RUNNING
    if SETTINGS.schedule_enabled
    else dg.DefaultScheduleStatus.STOPPED,
    description="Periodic re-run (orchestration.schedule_cron in params.yaml): DVC skips every "
    "stage whose inputs did not change.",
)

defs = dg.Definitions(jobs=[pipeline_job], schedules=[weekly_retrain])
