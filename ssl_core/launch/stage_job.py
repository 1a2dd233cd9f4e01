"""A heavy stage as a job: snapshot params, submit, wait, check the outputs, record the job.

``sslops embeddings|teacher|students`` (and so DVC and Dagster) call :func:`run_stage_job`, as
does ``sslops clusters`` when ``launch.clusters`` asks for more than one rank.
Each job gets a folder ``<data>/.jobs/<stage>-<utc time>/`` (next to the outputs, on the data
volume in a cluster) holding the params snapshot the job reads, ``job.log`` (its streamed log),
``request.yaml`` (the rendered scheduler request, container schedulers) and ``job.json``
(handle, state, timings). After success the outputs' ``lineage.json`` gains a ``job`` entry.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from torchx.specs import AppDryRunInfo

from ssl_core.config import Params, jobs_dir
from ssl_core.launch.component import stage_app
from ssl_core.launch.job import RESULT_PREFIX
from ssl_core.launch.launcher import JobFailed, JobInterrupted, JobResult, run_job
from ssl_core.launch.settings import RUN_ID_ENV
from ssl_core.launch.volcano import harden, job_labels
from ssl_core.lineage import JOB_ID_ENV, LINEAGE_FILE, git_sha
from ssl_core.utils.atomic import write_json, write_text


def jobs_root(params: Params) -> Path:
    """``<data>/.jobs``: one folder per submitted job (not a DVC output)."""
    return jobs_dir(params.paths)


def stage_outputs(params: Params, stage: str, students: list[str] | None = None) -> list[Path]:
    """The folders whose ``lineage.json`` a successful job must have written (``students``:
    the students the job built, default all of ``distill.students``)."""
    p = params.paths
    if stage == "embeddings":
        return [Path(p.embeddings_dir)]
    if stage == "clusters":
        return [Path(p.clusters_dir)]
    if stage == "teacher":
        return [Path(p.teacher_dir)]
    return [Path(p.students_dir) / name for name in students or params.distill.students]


def _result_line(lines: list[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        i = line.find(RESULT_PREFIX)
        if i >= 0:
            return json.loads(line[i + len(RESULT_PREFIX) :])
    return None


def _record(outputs: list[Path], job_id: str, job: dict[str, Any]) -> dict[str, Any]:
    """Check each output's lineage is this job's, add the job entry; returns rank-0 stats."""
    stats: dict[str, Any] = {}
    for out in outputs:
        lin = out / LINEAGE_FILE
        record = json.loads(lin.read_text()) if lin.is_file() else {}
        if record.get("job_id") != job_id:
            raise JobFailed(
                f"job {job['app_handle']} succeeded but did not write {lin} (is the data volume "
                "mounted where the job writes? see k8s/README.md)",
                job["app_handle"],
            )
        write_json(lin, {**record, "job": job})
        stats[out.name] = record.get("stats", {})
    return stats


def _app_and_patch(
    params: Params, stage: str, job_id: str, snapshot: str, extra: tuple[str, ...] = ()
):
    """The stage's AppDef and the edit of its dry-run request (hardening on kubernetes)."""
    launch = params.launch
    run_id = os.environ.get(RUN_ID_ENV, "")
    env = {JOB_ID_ENV: job_id, RUN_ID_ENV: run_id}
    name = f"sslops-{stage}" + (f"-{run_id[:8]}" if run_id else "")
    app = stage_app(stage, launch, snapshot, name=name, env=env, extra=extra)
    labels = job_labels(stage, run_id, git_sha())

    def patch(info: AppDryRunInfo) -> None:
        if launch.scheduler == "kubernetes":
            harden(info, labels)

    return app, patch


def render_stage_job(params: Params, stage: str) -> str:
    """What ``stage`` would submit to ``launch.scheduler`` (the dry-run request, as YAML for
    kubernetes); contacts no scheduler (``sslops job-spec``)."""
    from ssl_core.launch.launcher import scheduler_cfg, torchx_runner

    snapshot = str(jobs_root(params) / f"{stage}-<time>" / "params.yaml")
    app, patch = _app_and_patch(params, stage, f"{stage}-<time>", snapshot)
    with torchx_runner() as runner:
        cfg = scheduler_cfg(runner, params.launch)
        info = runner.dryrun(app, params.launch.scheduler, cfg=cfg, workspace=None)
    patch(info)
    return f"# scheduler: {params.launch.scheduler}, run options: {cfg}\n{info.request}"


def run_stage_job(
    params: Params, params_file: str | Path, stage: str, only: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """Run ``stage`` as a TorchX job on ``params.launch.scheduler``; returns its stats.
    ``only={"students": [...]}`` builds just those students (``sslops students --student``)."""
    students = (only or {}).get("students")
    extra = tuple(a for name in students or () for a in ("--student", name))
    launch = params.launch
    now = dt.datetime.now(dt.UTC)
    job_dir = jobs_root(params) / f"{stage}-{now:%Y%m%d-%H%M%S-%f}"
    job_dir.mkdir(parents=True, exist_ok=False)
    snapshot = job_dir / "params.yaml"
    write_text(snapshot, Path(params_file).read_text())
    app, harden_request = _app_and_patch(params, stage, job_dir.name, str(snapshot), extra)

    def patch(info: AppDryRunInfo) -> None:
        harden_request(info)
        if not launch.on_host:
            write_text(job_dir / "request.yaml", str(info.request))

    run_id = os.environ.get(RUN_ID_ENV, "")
    job = {"scheduler": launch.scheduler, "job_dir": str(job_dir), "dagster_run_id": run_id}
    try:
        result: JobResult = run_job(app, launch, job_dir / "job.log", patch=patch)
    except JobFailed as e:
        write_json(job_dir / "job.json", {**job, "app_handle": e.handle, "state": e.state})
        raise
    except JobInterrupted as e:
        write_json(job_dir / "job.json", {**job, "state": f"CANCELLED ({e})"})
        raise
    job |= {"app_handle": result.handle, "state": result.state, "wall_s": round(result.wall_s, 3)}
    write_json(job_dir / "job.json", job)
    stats = _record(stage_outputs(params, stage, students), job_dir.name, job)
    parsed = _result_line(result.lines)
    if parsed is not None:
        parsed.pop("stage", None)
        return parsed
    return stats if stage == "students" else next(iter(stats.values()))
