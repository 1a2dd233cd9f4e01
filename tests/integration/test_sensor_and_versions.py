"""The pool sensor (real sensor function, real ephemeral Dagster instance) and the assets'
code versions (derived from dvc.yaml deps + params)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver  # Dagster's own

from orchestration.code_versions import code_deps, code_versions, stage_params
from orchestration.definitions import defs as load_defs
from orchestration.defs import sensors
from orchestration.defs.assets import ASSETS
from orchestration.defs.resources import StageRunner
from orchestration.defs.sensors import pool_sensor, state_dir
from orchestration.graph import BY_NAME, GRAPH
from orchestration.runner import project_dir
from ssl_core.data.pool_scan import diff, scan
from ssl_core.orchestration_settings import OrchestrationConfig, load_orchestration
from ssl_core.stages.ingest import MANIFEST

REPO = Path(__file__).resolve().parents[2]
TAGS = ("added", "changed", "removed")


# --- the pool sensor ------------------------------------------------------------------------


def _project(tmp_path: Path, has_run: bool = True) -> tuple[Path, Path]:
    """A user pool (outside the project) with 3 files, and a project whose params point at it.
    ``has_run``: a manifest exists on disk, as after a first pipeline run."""
    pool, proj = tmp_path / "pool", tmp_path / "proj"
    (pool / "sub").mkdir(parents=True)
    for i, rel in enumerate(("a.png", "b.png", "sub/c.jpg")):
        (pool / rel).write_bytes(bytes([i]) * (100 + i))
    (pool / ".DS_Store").write_bytes(b"hidden: ignored")
    proj.mkdir()
    params = {"data": {"source": "folder"}, "paths": {"pool": str(pool)}}
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    if has_run:
        (proj / "data" / "manifest").mkdir(parents=True)
        (proj / "data" / "manifest" / MANIFEST).write_bytes(b"")
    return pool, proj


def _snapshot(pool: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(pool).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(pool.rglob("*"))
        if p.is_file()
    }


class Sensor:
    """Evaluates the real ``pool_sensor`` and checks each evaluation left the pool untouched."""

    def __init__(self, pool: Path, proj: Path) -> None:
        self.pool, self.proj = pool, proj
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def __call__(self, cursor: str | None = None, keep: bool = True) -> dg.SensorResult:
        before = _snapshot(self.pool)
        ctx = dg.build_sensor_context(
            cursor=cursor if cursor is not None else self.cursor,
            instance=self.instance,
            resources={"runner": StageRunner(project=str(self.proj))},
        )
        result = pool_sensor(ctx)
        assert _snapshot(self.pool) == before, "the sensor modified the pool"
        if keep:
            self.cursor = result.cursor
        return result


def _counts(result: dg.SensorResult) -> dict[str, str]:
    assert result.run_requests and len(result.run_requests) == 1, result.skip_reason
    tags = result.run_requests[0].tags
    return {k: tags[f"sslops/pool_{k}"] for k in TAGS}


def _bump_mtime(path: Path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_sensor_reports_added_changed_removed_and_never_writes_the_pool(tmp_path):
    pool, proj = _project(tmp_path)
    sensor = Sensor(pool, proj)

    first = sensor()  # baseline: the graph has run (a manifest exists)
    assert not first.run_requests and "baseline" in first.skip_reason.skip_message
    cursor = json.loads(first.cursor)
    assert cursor["files"] == 3 and len(first.cursor) < 300  # compact: the map is in a file
    assert (state_dir(proj, "data/embeddings") / f"{cursor['digest']}.json").is_file()

    same = sensor()
    assert not same.run_requests and "no change" in same.skip_reason.skip_message

    (pool / "sub" / "new.png").write_bytes(b"new image")
    added = sensor()
    assert _counts(added) == {"added": "1", "changed": "0", "removed": "0"}
    req = added.run_requests[0]
    assert json.loads(req.tags["sslops/pool_examples"])["added"] == ["sub/new.png"]
    selected = {k.to_user_string() for k in req.asset_selection}
    assert req.job_name in (None, "ssl_upstream")  # the chain sensor runs students, report
    assert "manifest" in selected and "teacher" in selected and "raw_pool" not in selected
    checks = {c.name for c in req.asset_check_keys}
    assert {f"gx_{s.check}" for s in GRAPH if s.check and s.name in selected} == checks
    assert not sensor().run_requests  # the new state is the cursor's

    (pool / "a.png").write_bytes(b"other content")
    _bump_mtime(pool / "a.png")
    changed = sensor()
    assert _counts(changed) == {"added": "0", "changed": "1", "removed": "0"}
    assert changed.run_requests[0].run_key != req.run_key

    (pool / "b.png").unlink()
    assert _counts(sensor()) == {"added": "0", "changed": "0", "removed": "1"}

    _bump_mtime(pool / "sub" / "c.jpg")  # touched, same bytes: hashed again, no change
    touched = sensor()
    assert not touched.run_requests and "1 touched" in touched.skip_reason.skip_message

    # the cursor round-trips: a fresh context (and instance) with it sees no change
    again = Sensor(pool, proj)(cursor=sensor.cursor)
    assert not again.run_requests and "no change" in again.skip_reason.skip_message


def test_first_look_requests_a_run_only_if_the_graph_never_ran(tmp_path):
    pool, proj = _project(tmp_path, has_run=False)
    first = Sensor(pool, proj)()
    assert _counts(first) == {"added": "3", "changed": "0", "removed": "0"}
    assert first.run_requests[0].tags["sslops/trigger"] == "pool_sensor"


def test_run_request_resolves_against_the_real_job(tmp_path):
    """Through Dagster's tick evaluation with the real definitions: the requested subset of
    ``ssl_upstream`` (assets from manifest down, with their blocking checks) exists."""
    pool, proj = _project(tmp_path, has_run=False)
    defs = load_defs()
    ctx = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        definitions=defs,
        resources={"runner": StageRunner(project=str(proj))},
    )
    (req,) = defs.resolve_sensor_def("pool_sensor").evaluate_tick(ctx).run_requests
    job = defs.resolve_job_def("ssl_upstream").get_subset(
        asset_selection=set(req.asset_selection), asset_check_selection=set(req.asset_check_keys)
    )
    nodes = set(job.graph.node_dict)
    assert "raw_pool" not in nodes and {"manifest", "manifest_gx_manifest"} <= nodes


def test_no_scan_while_the_pipeline_runs(tmp_path):
    pool, proj = _project(tmp_path)
    sensor = Sensor(pool, proj)
    sensor()
    run = dg.DagsterRun(
        job_name="ssl_students", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED
    )
    sensor.instance.add_run(run)
    (pool / "new.png").write_bytes(b"added during the run")
    busy = sensor()
    assert not busy.run_requests and "in progress" in busy.skip_reason.skip_message
    sensor.instance.report_run_canceled(run)
    assert _counts(sensor()) == {"added": "1", "changed": "0", "removed": "0"}


def test_lost_state_is_rebuilt_and_compared_by_content_digest(tmp_path):
    pool, proj = _project(tmp_path)
    sensor = Sensor(pool, proj)
    sensor()
    shutil.rmtree(state_dir(proj, "data/embeddings"))
    rebuilt = sensor()
    assert not rebuilt.run_requests and "rebuilt" in rebuilt.skip_reason.skip_message
    shutil.rmtree(state_dir(proj, "data/embeddings"))
    (pool / "a.png").write_bytes(b"changed while the state was gone")
    assert _counts(sensor()) == dict.fromkeys(TAGS, "unknown")


def test_missing_pool_is_skipped(tmp_path):
    pool, proj = _project(tmp_path)
    shutil.rmtree(pool)
    ctx = dg.build_sensor_context(resources={"runner": StageRunner(project=str(proj))})
    result = pool_sensor(ctx)
    assert not result.run_requests and "not found" in result.skip_reason.skip_message


def test_scan_hashes_only_new_or_restatted_files(tmp_path):
    pool, _ = _project(tmp_path)
    state, hashed, complete = scan(pool, {})
    assert (hashed, complete) == (3, True) and sorted(state) == ["a.png", "b.png", "sub/c.jpg"]
    assert diff({}, state).added == ("a.png", "b.png", "sub/c.jpg")
    again, hashed, _ = scan(pool, state)
    assert hashed == 0 and again == state
    _bump_mtime(pool / "a.png")
    touched, hashed, _ = scan(pool, state)
    change = diff(state, touched, hashed)
    assert hashed == 1 and change.touched == ("a.png",) and not change.any


def test_hashing_past_the_deadline_resumes(tmp_path):
    pool, _ = _project(tmp_path)
    partial, hashed, complete = scan(pool, {}, deadline=0.0)  # long past: one file per call
    assert (hashed, complete) == (1, False)
    assert sum(e[3] is None for e in partial.values()) == 2
    state, hashed, complete = scan(pool, partial, deadline=0.0)
    state, hashed, complete = scan(pool, state, deadline=0.0)
    assert (hashed, complete) == (1, True) and state == scan(pool, {})[0]


def test_sensor_spreads_a_long_scan_over_ticks(tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "HASH_BUDGET_S", -1.0)  # one file per tick
    pool, proj = _project(tmp_path)
    sensor = Sensor(pool, proj)
    messages = [sensor().skip_reason.skip_message for _ in range(3)]
    assert "1 of 3 files hashed" in messages[0] and "2 of 3" in messages[1]
    assert "baseline" in messages[2]
    (pool / "z.png").write_bytes(b"added")
    (pool / "a.png").write_bytes(b"changed")
    _bump_mtime(pool / "a.png")
    assert "continuing" in sensor().skip_reason.skip_message
    assert _counts(sensor()) == {"added": "1", "changed": "1", "removed": "0"}


def test_parquet_pool_is_one_entry(tmp_path):
    f = tmp_path / "pool.parquet"
    f.write_bytes(b"PAR1...PAR1")
    state, _, _ = scan(f, {})
    assert list(state) == ["pool.parquet"] and diff({}, state).added == ("pool.parquet",)


# --- settings: schedule and sensor from params.yaml -----------------------------------------


def test_orchestration_settings_defaults_and_validation(tmp_path):
    cfg = OrchestrationConfig()
    assert (cfg.schedule_cron, cfg.schedule_timezone) == ("0 3 * * 1", "UTC")
    assert not cfg.schedule_enabled and not cfg.pool_sensor_enabled
    assert cfg.pool_sensor_interval_s == 300
    assert load_orchestration(tmp_path / "absent.yaml") == cfg
    for bad in ({"schedule_cron": "0 3 * *"}, {"schedule_timezone": "Mars/Olympus"}, {"x": 1}):
        with pytest.raises(ValueError):
            OrchestrationConfig.model_validate(bad)


def test_schedule_and_sensor_follow_params(tmp_path):
    """Loaded in a fresh interpreter against a project whose params turn both on."""
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "orchestration": {
                    "schedule_cron": "30 2 * * *",
                    "schedule_timezone": "Europe/Paris",
                    "schedule_enabled": True,
                    "pool_sensor_enabled": True,
                    "pool_sensor_interval_s": 60,
                }
            }
        )
    )
    code = (
        "import json; from orchestration.defs import jobs, sensors as s\n"
        "w, p = jobs.weekly_retrain, s.pool_sensor\n"
        "print(json.dumps([w.cron_schedule, w.execution_timezone, w.default_status.value,"
        " p.default_status.value, p.minimum_interval_seconds]))"
    )
    env = {**os.environ, "SSLOPS_PROJECT_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == [
        "30 2 * * *",
        "Europe/Paris",
        "RUNNING",
        "RUNNING",
        60,
    ]


# --- code versions --------------------------------------------------------------------------


def test_every_asset_has_the_code_version_of_its_stage():
    expected = code_versions(project_dir())
    versions = {a.key.to_user_string(): a.code_versions_by_key[a.key] for a in ASSETS}
    assert versions == expected
    assert all(v and v.startswith("code:") for v in versions.values())
    assert len(set(versions.values())) == len(versions)  # no two stages share code + params


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "proj"
    shutil.copytree(REPO / "ssl_core", dest / "ssl_core", ignore=shutil.ignore_patterns("__py*"))
    for f in ("dvc.yaml", "demo/dvc.yaml", "params.yaml"):
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, dest / f)
    return dest


def _users_of(root: Path, module: str) -> set[str]:
    """Assets whose stage lists ``module`` or a folder above it as a code dep."""
    return {
        s.name
        for s in GRAPH
        if any(module == d or module.startswith(d + "/") for d in code_deps(root, s.dvc_stage))
    }


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {a for a in before if before[a] != after[a]}


def test_editing_a_module_changes_only_the_stages_that_run_it(project_copy):
    before = code_versions(project_copy)
    assert before == code_versions(REPO)  # the copy hashes like the checkout

    for module, must, must_not in (
        ("ssl_core/curation/dedup.py", "dedup", "teacher"),
        ("ssl_core/loss/koleo.py", "teacher", "manifest"),  # inside a folder dep
        ("ssl_core/data/demo_pool.py", "raw_pool", "manifest"),  # demo/dvc.yaml
    ):
        users = _users_of(project_copy, module)
        assert must in users and must_not not in users
        path = project_copy / module
        path.write_text(path.read_text() + "\n# edited\n")
        after = code_versions(project_copy)
        assert _changed(before, after) == users, module
        assert all(after[a].split()[1] == before[a].split()[1] for a in users)  # params half
        before = after

    (project_copy / "ssl_core" / "loss" / "NOTES.md").write_text("not code")
    assert code_versions(project_copy) == before  # folders are hashed over *.py only


def test_a_params_change_changes_only_the_stages_that_track_it(project_copy):
    before = code_versions(project_copy)
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    params["dedup"]["k"] += 1
    (project_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    after = code_versions(project_copy)
    trackers = {
        s.name
        for s in GRAPH
        if any(
            k in ("params.yaml:dedup", "params.yaml:dedup.k")
            for k in stage_params(project_copy, s.dvc_stage)
        )
    }
    assert "dedup" in trackers and _changed(before, after) == trackers
    assert after["dedup"].split()[0] == before["dedup"].split()[0]  # code half unchanged
    params["orchestration"] = {"schedule_enabled": True}  # tracked by no stage
    (project_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert code_versions(project_copy) == after


def test_a_new_code_version_marks_the_asset_stale(project_copy):
    """Dagster's own stale resolver over the real assets and an ephemeral instance: a
    materialisation recorded under other code is stale, one under the current code fresh."""
    key = dg.AssetKey("raw_pool")
    current = code_versions(project_dir())["raw_pool"]
    path = project_copy / "ssl_core" / "data" / "demo_pool.py"
    path.write_text(path.read_text() + "\n# edited\n")
    other = code_versions(project_copy)["raw_pool"]
    assert other != current

    instance = dg.DagsterInstance.ephemeral()

    def record(version: str) -> CachingStaleStatusResolver:
        tags = {"dagster/code_version": version, "dagster/data_version": "d1"}
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, tags=tags))
        return get_stale_status_resolver(instance, ASSETS)

    assert record(current).get_status(key) == StaleStatus.FRESH
    resolver = record(other)
    assert resolver.get_status(key) == StaleStatus.STALE
    assert [c.reason for c in resolver.get_stale_causes(key)] == ["has a new code version"]
    assert BY_NAME["raw_pool"].dvc_stage == "demo/dvc.yaml:raw_pool"
