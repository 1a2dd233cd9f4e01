"""The whole graph as one job (so blocking checks gate downstream steps), and a weekly
retraining schedule. DVC takes a repo lock, so steps run one at a time."""

from __future__ import annotations

import dagster as dg

pipeline_job = dg.define_asset_job(
    "ssl_pipeline",
    selection=dg.AssetSelection.groups("ssl_pipeline"),
    description="raw pool → manifest → embeddings → dedup → clusters → curated → teacher → students → reports",
    executor_def=dg.in_process_executor,
)

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=pipeline_job,
    cron_schedule="0 3 * * 1",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly re-run: DVC skips every stage whose inputs did not change.",
)

defs = dg.Definitions(jobs=[pipeline_job], schedules=[weekly_retrain])
