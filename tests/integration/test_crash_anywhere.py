"""Crash anywhere (issue 15 item 1): ``kill -9`` at named places inside every stage, then the
same command again, gives the outputs of an uninterrupted run.

The kill is a real SIGKILL of the stage process (or of its TorchX job process, or of one
torchrun worker) by the failpoint hook (:mod:`ssl_core.utils.failpoints`,
``SSLOPS_FAILPOINT=<name>[:<n>][@<rank>]``), at a place chosen by name instead of by timing.
After the kill no finished-looking output exists (no folder, or no ``lineage.json`` in a
training folder); the rerun (CLI, ``dvc repro``, Dagster re-execution of the failed run) ends
with every output file equal to the uninterrupted run's, bit for bit, except the fields that
record how the run went rather than what it computed (:data:`VOLATILE`, docs/reliability.md
§1): timings and throughput, job ids, and the counters of work resumed from caches.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ssl_core.utils.failpoints import ENV as FAILPOINT_ENV
from tests.integration.tiny_project import TINY, dvc_bin, env, make_tiny_project

pytestmark = pytest.mark.usefixtures("fmnist_required")

# several embedding shards and a checkpoint after every training step, so that a kill can land
# between two of them; none of these changes what the stages compute
OVERRIDES = {
    "embed": {"shard_size": 64, "batch_size": 32},
    "train": {**TINY["train"], "checkpoint_every": 1},
    "distill": {**TINY["distill"], "checkpoint_every": 1},
}
ORDER = ("raw_pool", "manifest", "embeddings", "dedup", "clusters", "curated", "teacher")
ORDER += ("students", "report")
#: what a stage writes (its output first) and the caches it reuses, under the project
STATE = {
    "embeddings": ("data/embeddings", "data/.cache/embeddings"),
    "dedup": ("data/dedup",),
    "clusters": ("data/clusters", "data/.cache/hkmeans"),
    "curated": ("data/curated",),
    "teacher": ("data/teacher",),
    "students": ("data/students",),
    "report": ("data/reports",),
}
JOB_STAGES = {"embeddings", "teacher", "students"}  # run as a TorchX job (local_cwd)

#: fields that legitimately differ between an interrupted+resumed run and an uninterrupted one:
#: when and how long it ran, which job ran it, and how much it took from caches (resumed
#: shards / levels / steps); everything else, and every other file, must be equal
VOLATILE = {
    "lineage.json": {"duration_s", "finished_at", "job", "job_id"},
    "stats": {"wall_s", "images_per_s", "resumed_from_step", "cached", "newly_embedded"}
    | {"shards", "resumed_levels", "model_figures_s"},
    "summary.json": {"wall_s", "images_per_s", "resumed_from_step"},
    "metrics.jsonl": {"images_per_s"},
    "train_state": {"wall_s"},
    # report: every JSON under reports/ without "images_per_s" (measured throughput of each
    # model) and "train_wall_s" (its training time); report.md / report.html with their
    # numbers masked (they print those)
}


def _run(
    project: Path, cmd: list[str], failpoint: str | None = None
) -> subprocess.CompletedProcess:
    e = env()
    e.pop(FAILPOINT_ENV, None)
    if failpoint:
        e[FAILPOINT_ENV] = failpoint
    return subprocess.run(cmd, cwd=project, env=e, capture_output=True, text=True, timeout=600)


def _ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, (
        f"{p.args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    )


def _tensor_tree(obj: Any) -> Any:
    """A checkpoint part as comparable plain data (tensors by dtype, shape and bytes)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        return (
            str(t.dtype),
            tuple(t.shape),
            hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy()).hexdigest(),
        )
    if isinstance(obj, dict):
        return {k: _tensor_tree(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_tensor_tree(v) for v in obj]
    return obj


def _drop(d: dict, keys: set[str]) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _drop_deep(obj: Any, keys: set[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_deep(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_drop_deep(v, keys) for v in obj]
    return obj


def _mask_text(obj: Any) -> Any:
    """``obj`` with the digits inside its strings masked (its numbers kept)."""
    if isinstance(obj, dict):
        return {k: _mask_text(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mask_text(v) for v in obj]
    return re.sub(r"\d", "0", obj) if isinstance(obj, str) else obj


def _comparable(path: Path) -> Any:
    """What must be equal between two runs: the sha256 of the file, or for the files with
    :data:`VOLATILE` fields, their content without those fields."""
    name = path.name
    if name == "lineage.json":
        d = _drop(json.loads(path.read_text()), VOLATILE["lineage.json"])
        return {**d, "stats": _drop(d.get("stats", {}), VOLATILE["stats"])}
    if name == "summary.json":
        return _drop(json.loads(path.read_text()), VOLATILE["summary.json"])
    if name == "metrics.jsonl":
        return [
            _drop(json.loads(ln), VOLATILE["metrics.jsonl"]) for ln in path.read_text().splitlines()
        ]
    if name == "checkpoint.pt":  # train_state holds the wall time (and the last step's img/s)
        ck = torch.load(path, weights_only=True)
        ts = _drop(ck["train_state"], VOLATILE["train_state"])
        ts["last"] = _drop(ts.get("last", {}), VOLATILE["metrics.jsonl"])
        return _tensor_tree({**ck, "train_state": ts})
    if name == "checkpoint.pt.record.json":
        return "size+hash of checkpoint.pt (compared above, without its wall time)"
    in_report = "reports" in path.parts
    if in_report and path.suffix == ".json":
        # the measured img/s of every model and the wall time of its training, also quoted in
        # text (the register-twin hint says what a student took): numbers in strings masked
        d = _drop_deep(json.loads(path.read_text()), {"images_per_s", "train_wall_s"})
        return _mask_text(d)
    if in_report and name in ("report.md", "report.html"):
        # the same text but for the img/s column (compared through metrics.json above)
        return re.sub(r"\d[\d,.]*", "0", path.read_text())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs(project: Path, stage: str, git_sha: bool = True) -> dict[str, Any]:
    """Every file of ``stage``'s output as :func:`_comparable`; ``git_sha=False`` also leaves
    the code version out of ``lineage.json`` (a git checkout compared with a plain folder)."""
    out = project / STATE[stage][0]
    assert out.is_dir(), f"{out} missing"
    # .gitignore: DVC's own file in a foreach output's parent (data/students), not an output
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != ".gitignore")
    found = {p.relative_to(out).as_posix(): _comparable(p) for p in files}
    if not git_sha:
        found = {
            k: _drop(v, {"git_sha"}) if k.endswith("lineage.json") else v for k, v in found.items()
        }
    return found


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """The tiny project, every stage run once, uninterrupted, by its CLI command."""
    project = make_tiny_project(
        tmp_path_factory.mktemp("crash") / "base", OVERRIDES, with_dvc=False
    )
    for stage in ORDER:
        _ok(_run(project, ["sslops", stage]))
    return project


def _before(baseline: Path, dest: Path, stage: str) -> Path:
    """A copy of the baseline project as it was before ``stage`` ran (its outputs and caches
    removed; the later stages' outputs do not influence it)."""
    shutil.copytree(baseline, dest, symlinks=True, ignore=shutil.ignore_patterns(".jobs"))
    for rel in STATE[stage]:
        shutil.rmtree(dest / rel, ignore_errors=True)
    return dest


def _assert_killed(p: subprocess.CompletedProcess, stage: str, failpoint: str) -> None:
    """The command died by SIGKILL, or (a job stage) its job did and the command failed."""
    said = f"SIGKILL at failpoint {re.split('[:@]', failpoint)[0]}"
    if stage in JOB_STAGES:
        assert p.returncode == 1, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
        assert said in p.stdout + p.stderr, (p.stdout[-2000:], p.stderr[-2000:])
    else:
        assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
        assert said in p.stderr


def _assert_nothing_finished(project: Path, stage: str) -> None:
    """No output a later stage (or DVC) could take for complete: atomic folders do not exist,
    a training folder has no ``lineage.json`` (written last)."""
    out = project / STATE[stage][0]
    if stage in ("teacher", "students"):
        assert not list(out.rglob("lineage.json")), "a killed training run looks finished"
    else:
        assert not out.exists(), f"{out} exists after the kill"


CASES = [
    ("embeddings", "embed.shard_written:2"),  # two shards complete
    ("embeddings", "embed.shard_half_written:3"),  # a shard's matrix written, ids not
    ("dedup", "dedup.near_done"),  # between its steps
    ("dedup", "dedup.before_swap"),  # outputs written, not swapped in
    ("clusters", "kmeans.in_level:2"),  # inside level 1, level 0 checkpointed
    ("curated", "curate.before_swap"),
    ("teacher", "train.after_checkpoint:1"),
    ("students", "train.step:2"),  # between checkpoints 1 and 2
    ("report", "report.partial"),  # some report files written, others not
]


@pytest.mark.parametrize(("stage", "failpoint"), CASES, ids=[f"{s}-{f}" for s, f in CASES])
def test_kill_then_rerun_gives_the_uninterrupted_outputs(baseline, tmp_path, stage, failpoint):
    project = _before(baseline, tmp_path / "p", stage)
    _assert_killed(_run(project, ["sslops", stage], failpoint), stage, failpoint)
    _assert_nothing_finished(project, stage)
    _ok(_run(project, ["sslops", stage]))
    assert _outputs(project, stage) == _outputs(baseline, stage)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "failpoint"),
    [
        ("embeddings", "embed.batch:3"),  # mid-shard: a batch embedded, its shard not written
        # a checkpoint written under its temporary name, not renamed in (job process only:
        # the stage command's own atomic writes pass the same failpoint)
        ("teacher", "atomic.before_replace:2@job"),
        ("teacher", "train.mid_outputs"),  # model exported, head and summary not
        ("clusters", "kmeans.level_saved:1"),
        ("report", "atomic.dir_before_replace"),
    ],
)
def test_more_kill_points(baseline, tmp_path, stage, failpoint):
    test_kill_then_rerun_gives_the_uninterrupted_outputs(baseline, tmp_path, stage, failpoint)


@pytest.mark.slow
def test_kill_one_worker_of_a_two_process_training_job(baseline, tmp_path):
    """torchrun with 2 gloo workers (DDP on CPU): rank 1 is killed between checkpoints; torchrun
    ends rank 0, the job fails; the rerun resumes from the checkpoint to the same model as an
    uninterrupted 2-process run."""
    two = _before(baseline, tmp_path / "two", "teacher")
    params = yaml.safe_load((two / "params.yaml").read_text())
    params["launch"].setdefault("teacher", {})["nproc_per_node"] = 2
    params["train"]["batch_size"] = 8  # 80 images / 2 ranks / 8: 5 steps per epoch, max 3
    (two / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    killed = shutil.copytree(two, tmp_path / "killed", symlinks=True)
    _ok(_run(two, ["sslops", "teacher"]))
    assert json.loads((two / "data/teacher/summary.json").read_text())["world_size"] == 2
    p = _run(killed, ["sslops", "teacher"], "train.step:2@1")
    _assert_killed(p, "teacher", "train.step")
    _assert_nothing_finished(killed, "teacher")
    _ok(_run(killed, ["sslops", "teacher"]))
    summary = json.loads((killed / "data/teacher/summary.json").read_text())
    assert summary["resumed_from_step"] == 1 and summary["world_size"] == 2
    assert _outputs(killed, "teacher") == _outputs(two, "teacher")


@pytest.mark.slow
@pytest.mark.skipif(dvc_bin() is None, reason="DVC not installed (make setup)")
def test_kill_inside_dvc_repro_then_repro_again(baseline, tmp_path):
    project = make_tiny_project(tmp_path / "dvc", OVERRIDES)
    # the baseline's code and params (the checkout may have changed since it was copied)
    shutil.copy(baseline / "params.yaml", project / "params.yaml")
    shutil.copytree(baseline / "ssl_core", project / "ssl_core", dirs_exist_ok=True)
    p = _run(project, [dvc_bin(), "repro"], "curate.before_swap")
    assert p.returncode != 0 and "SIGKILL at failpoint curate.before_swap" in p.stderr
    assert not (project / "data/curated").exists()
    _ok(_run(project, [dvc_bin(), "repro"]))
    for stage in ("curated", "teacher", "students", "report"):  # the baseline is no git repo
        assert _outputs(project, stage, git_sha=False) == _outputs(baseline, stage, False), stage
    status = _run(project, [dvc_bin(), "status"])
    assert "Data and pipelines are up to date" in status.stdout


@pytest.mark.slow
def test_dagster_reexecution_of_the_killed_run(baseline, tmp_path, monkeypatch):
    """The ``ssl_upstream`` job (CLI runner) killed inside ``curated``; re-executing the failed
    run from its failure (Dagster's ``ReexecutionOptions.from_failure``) runs ``curated`` and
    ``teacher`` and gives the uninterrupted outputs."""
    import dagster as dg

    project = _before(baseline, tmp_path / "dg", "curated")
    shutil.rmtree(project / STATE["teacher"][0])
    monkeypatch.setenv("SSLOPS_PROJECT_DIR", str(project))
    monkeypatch.setenv("SSLOPS_RUNNER_MODE", "cli")
    monkeypatch.setenv("PATH", env()["PATH"])
    monkeypatch.setenv(FAILPOINT_ENV, "curate.before_swap")
    job = dg.reconstructable(_upstream_job)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        selection = [dg.AssetKey("curated"), dg.AssetKey("teacher")]
        with dg.execute_job(job, instance, asset_selection=selection) as first:
            assert not first.success
            failed = [e.step_key for e in first.all_events if e.event_type_value == "STEP_FAILURE"]
            assert failed == ["curated"]
        assert not (project / "data/curated").exists()
        monkeypatch.delenv(FAILPOINT_ENV)
        again = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        with dg.execute_job(job, instance, reexecution_options=again) as second:
            assert second.success
            done = {e.step_key for e in second.all_events if e.event_type_value == "STEP_SUCCESS"}
            assert {"curated", "teacher"} <= done
    for stage in ("curated", "teacher"):
        assert _outputs(project, stage) == _outputs(baseline, stage), stage


def _upstream_job():
    """``ssl_upstream`` as the project's code location defines it (reconstructable)."""
    from orchestration.definitions import defs

    return defs().resolve_job_def("ssl_upstream")
