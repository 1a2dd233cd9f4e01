"""``pool_sensor``: notices added, changed and removed files in the raw pool and requests a run
of everything downstream of the pool (``manifest`` … ``teacher`` in ``ssl_upstream``, with
their checks; ``pipeline_chain`` then runs each student and the report).

Each evaluation lists the pool and stats every file; only new files and files whose size or
times moved are read and hashed (:mod:`ssl_core.data.pool_scan`). A run is requested only when
content changed: touching a file does nothing. The pool is never written.

The Dagster cursor is a small JSON (pool path, content digest, file count, runs requested, and
while a long scan is unfinished the key of its partial state); the per-file state it points to
lives in ``data/.cache/pool_sensor/<digest>.json``. Dagster stores the cursor in its instance,
so it survives daemon restarts. Hashing stops after :data:`HASH_BUDGET_S` per evaluation (a
tick must end within Dagster's sensor timeout) and resumes on the next one.

First look at a pool (no cursor, or a cursor for another ``paths.pool``): the state is recorded
as the baseline. A run is requested then only if the graph has never run (no ``manifest``
materialisation in the instance and no manifest on disk); otherwise the pool is taken to be
what the last run ingested. If the cursor's state file was deleted, the pool is re-hashed and
a run requested only if its content digest differs from the cursor's (counts then unknown).
While a run of one of the graph's jobs is queued or in progress the pool is not scanned and the cursor does
not move (the run holds DVC's repo lock, and may be the demo builder rewriting the pool); the
first evaluation after it compares against the state before it.

Off by default; ``orchestration.pool_sensor_enabled`` / ``pool_sensor_interval_s`` in
params.yaml (docs/operations.md).

``pipeline_chain``: when a run of ``ssl_upstream`` succeeds (started by the schedule, this
sensor, the UI or ``dg launch``), requests the first student partition; when a chained student
run succeeds, the next one, then ``ssl_report`` (:func:`orchestration.pipeline.next_step`).
A failed run ends the chain. A student partition materialised by hand (no chain tag) starts
nothing: re-materialise ``report`` when you want it to include that student.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg

from orchestration.defs.jobs import SETTINGS, UPSTREAM, report_job, students_job, upstream_job
from orchestration.defs.resources import StageRunner
from orchestration.graph import GRAPH
from orchestration.pipeline import CHAIN_TAG, JOBS, next_step, student_names
from orchestration.runner import project_dir
from ssl_core.data.pool_scan import PoolDiff, diff, load_state, save_state, scan

START = "manifest"  # the first asset a pool change invalidates
TAG = "sslops/"  # run tag prefix
EXAMPLES = 3  # example paths per kind of change in the run's tags
# seconds of hashing per evaluation: a tick must end within Dagster's sensor timeout (60 s,
# DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS); a larger first scan resumes on the next ticks
HASH_BUDGET_S = 30.0


def downstream_of(asset: str) -> list[str]:
    """``asset`` and every asset downstream of it, in graph order."""
    keep = {asset}
    for spec in GRAPH:  # GRAPH is topologically ordered
        if keep & set(spec.deps):
            keep.add(spec.name)
    return [s.name for s in GRAPH if s.name in keep]


def selection() -> tuple[list[dg.AssetKey], list[dg.AssetCheckKey]]:
    """Assets of ``ssl_upstream`` from :data:`START` down, and their blocking GX checks (so
    they still gate); ``pipeline_chain`` runs the rest."""
    assets = [a for a in downstream_of(START) if a in UPSTREAM]
    checks = [
        dg.AssetCheckKey(dg.AssetKey(s.name), f"gx_{s.check}")
        for s in GRAPH
        if s.name in assets and s.check
    ]
    return [dg.AssetKey(a) for a in assets], checks


def state_dir(root: Path, embeddings_dir: str) -> Path:
    """``data/.cache/pool_sensor`` (the caches folder next to the stage outputs, which
    ``ssl_core.config.check_paths`` keeps apart from the pool)."""
    return root / Path(embeddings_dir).parent / ".cache" / "pool_sensor"


def _graph_has_run(context: dg.SensorEvaluationContext, root: Path, manifest_dir: str) -> bool:
    from ssl_core.stages.ingest import MANIFEST

    if (root / manifest_dir / MANIFEST).is_file():
        return True
    instance = context.instance
    return instance.get_latest_materialization_event(dg.AssetKey(START)) is not None


ACTIVE = [  # a run of the job in one of these states holds (or will take) DVC's repo lock
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _active_run(context: dg.SensorEvaluationContext) -> str | None:
    """The ``job (run id)`` of a queued or running run of the graph's jobs, if any."""
    for job in JOBS:
        runs = context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=job, statuses=ACTIVE), limit=1
        )
        if runs:
            return f"{job} ({runs[0].dagster_run.run_id})"
    return None


def _parse(cursor: str | None) -> dict:
    """The cursor as a dict; ``{}`` for none or one this sensor did not write."""
    try:
        value = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _tags(change: PoolDiff | None, digest: str, files: int) -> dict[str, str]:
    tags = {f"{TAG}trigger": "pool_sensor", f"{TAG}pool_digest": digest[:16]}
    tags[f"{TAG}pool_files"] = str(files)
    for kind in ("added", "changed", "removed"):
        count = getattr(change, kind, None)
        tags[f"{TAG}pool_{kind}"] = "unknown" if count is None else str(len(count))
    if change is not None:
        examples = change.examples(EXAMPLES)
        tags[f"{TAG}pool_examples"] = json.dumps(examples, separators=(",", ":"))
    return tags


@dg.sensor(
    name="pool_sensor",
    job=upstream_job,
    minimum_interval_seconds=SETTINGS.pool_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING
    if SETTINGS.pool_sensor_enabled
    else dg.DefaultSensorStatus.STOPPED,
    description="Lists paths.pool every interval; when files were added, changed (content) or "
    "removed, runs manifest and everything downstream. Never writes to the pool.",
)
def pool_sensor(context: dg.SensorEvaluationContext, runner: StageRunner) -> dg.SensorResult:
    params = runner.params()
    pool = (runner.root / params.paths.pool).resolve()
    cache = state_dir(runner.root, params.paths.embeddings_dir)
    cursor = _parse(context.cursor)
    if not pool.exists():
        demo = params.data.source == "demo"
        hint = " (run the pipeline once: it builds the demo pool)" if demo else ""
        return dg.SensorResult(skip_reason=f"pool {pool} not found{hint}", cursor=context.cursor)

    active = _active_run(context)
    if active:  # the cursor stays put: the next evaluation after that run sees the change
        return dg.SensorResult(
            skip_reason=f"run of {active} in progress: pool not scanned",
            cursor=context.cursor,
        )

    same_pool = cursor.get("pool") == str(pool)
    base_key, pending_key = (cursor.get(k) if same_pool else None for k in ("digest", "pending"))
    base = load_state(cache, base_key, pool) if base_key else None
    partial = load_state(cache, pending_key, pool) if pending_key else None
    deadline = time.monotonic() + HASH_BUDGET_S
    state, hashed, complete = scan(pool, partial or base or {}, deadline)
    keep = (base_key,) if base_key else ()
    runs = int(cursor.get("runs", 0))  # never reset: it keeps run keys unique
    if not complete:  # resume next tick; the diff will be taken against ``base``
        key = save_state(cache, pool, state, keep=keep)
        todo = sum(e[3] is None for e in state.values())
        new_cursor = {"pool": str(pool), "digest": base_key, "pending": key, "runs": runs}
        return dg.SensorResult(
            skip_reason=f"hashing {pool}: {len(state) - todo} of {len(state)} files hashed "
            f"({hashed} this tick); continuing next tick",
            cursor=json.dumps(new_cursor),
        )
    digest = save_state(cache, pool, state, keep=keep)
    new_cursor = {"pool": str(pool), "digest": digest, "files": len(state), "runs": runs}
    change = diff(base, state, hashed) if base is not None else None

    def done(message: str) -> dg.SensorResult:
        return dg.SensorResult(skip_reason=message, cursor=json.dumps(new_cursor))

    if change is None:  # no usable state: baseline, or a lost state file
        if base_key and base_key == digest:
            return done(f"sensor state rebuilt: {len(state)} files, content unchanged")
        if base_key:  # the counts are unknown: the per-file state they'd come from is gone
            reason = "content differs from the cursor's (per-file state was lost)"
        elif _graph_has_run(context, runner.root, params.paths.manifest_dir):
            return done(f"baseline recorded: {len(state)} files in {pool}")
        else:  # every file counts as added
            change = diff({}, state, hashed)
            reason = f"first look at the pool ({len(state)} files) and the graph never ran"
    elif not change.any:
        touched = change.touched
        note = f", {len(touched)} touched with identical content" if touched else ""
        return done(f"no change in {len(state)} files{note}")
    else:
        reason = ", ".join(f"{n} {k}" for k, n in change.counts().items() if n)

    new_cursor["runs"] = runs + 1
    assets, checks = selection()
    context.log.info(f"pool {pool}: {reason}; requesting a run of {START} and downstream")
    if change is not None:
        context.log.info(f"examples: {change.examples(EXAMPLES)}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"pool-{runs + 1}-{digest[:16]}",
                asset_selection=assets,
                asset_check_keys=checks,
                tags=_tags(change, digest, len(state)),
            )
        ],
        cursor=json.dumps(new_cursor),
    )


def _students(context: dg.RunStatusSensorContext) -> list[str]:
    """The partition keys of ``ssl_students`` in these definitions (else params.yaml's)."""
    repo = context.repository_def
    partitions = repo.get_job(students_job.name).partitions_def if repo else None
    if partitions is not None:
        return list(partitions.get_partition_keys())
    return student_names(project_dir() / "params.yaml")


@dg.run_status_sensor(
    name="pipeline_chain",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[upstream_job, students_job],
    request_jobs=[students_job, report_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After ssl_upstream succeeds: each student partition in turn, then ssl_report "
    "(a failed run ends the chain)",
)
def pipeline_chain(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
    run = context.dagster_run
    chain = run.run_id if run.job_name == upstream_job.name else run.tags.get(CHAIN_TAG)
    if not chain:
        return dg.SkipReason(f"run {run.run_id} is not part of a full run (no {CHAIN_TAG} tag)")
    partition = run.tags.get("dagster/partition")
    step = next_step(_students(context), run.job_name, partition)
    if step is None:
        return dg.SkipReason(f"{run.job_name} [{partition}] ends chain {chain}")
    job, key = step
    tags = {k: v for k, v in run.tags.items() if k.startswith(TAG)} | {CHAIN_TAG: chain}
    return dg.RunRequest(
        run_key=f"{chain}:{job}:{key or ''}", job_name=job, partition_key=key, tags=tags
    )


defs = dg.Definitions(sensors=[pool_sensor, pipeline_chain])
