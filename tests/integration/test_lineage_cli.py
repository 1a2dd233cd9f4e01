"""``sslops lineage`` on a real tiny project (demo pool, every stage run through the CLI, the
job stages as TorchX local_cwd jobs): commit and params of each stage up to the raw pool, the
input-hash chain verdict, the image accounting against the files, and a tampered curated set."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ssl_core import cli
from ssl_core.audit.graph import BY_ASSET, MODEL_FILE, NODES
from ssl_core.stages.curate import CURATED
from ssl_core.stages.ingest import MANIFEST
from tests.conftest import FMNIST
from tests.integration.tiny_project import env, make_tiny_project, run

SSLOPS = str(Path(sys.executable).with_name("sslops"))
STAGES = (
    "raw_pool",
    "manifest",
    "embeddings",
    "dedup",
    "clusters",
    "curated",
    "teacher",
    "students",
)
TEACHER_CHAIN = [
    "teacher",
    "curated",
    "clusters",
    "dedup",
    "embeddings",
    "manifest",
    "raw_pool",
]
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="dataset-fashion-mnist not installed (apt-get install -y dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The graph up to the students (no evaluate), in a git checkout so lineage has a sha."""
    proj = make_tiny_project(tmp_path_factory.mktemp("lineage") / "proj", with_dvc=False)
    run(["git", "init", "-q"], proj)
    commit = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q"]
    run([*commit, "--allow-empty", "-m", "init"], proj)
    for stage in STAGES:
        run([SSLOPS, "--quiet", stage], proj)
    return proj


def lineage(proj: Path, *args: str, subprocess_: bool = False) -> subprocess.CompletedProcess:
    """``sslops lineage ARGS`` in ``proj``: in this process (fast), or as the real command."""
    cmd = [SSLOPS, "lineage", *args]
    if subprocess_:
        return subprocess.run(cmd, cwd=proj, env=env(), capture_output=True, text=True)
    out, err, cwd = io.StringIO(), io.StringIO(), Path.cwd()
    os.chdir(proj)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["lineage", *args])
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess(cmd, rc, out.getvalue(), err.getvalue())


def lineage_json(proj: Path, *args: str, rc: int = 0) -> dict:
    r = lineage(proj, *args, "--json")
    assert r.returncode == rc, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(r.stdout)


def record(proj: Path, entry: dict) -> dict:
    return json.loads((proj / entry["lineage"]).read_text())


def stage_block(text: str, key: str) -> str:
    """The lines ``sslops lineage`` prints for one stage."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[0] == key)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), None)
    return "\n".join(lines[start:end])


def test_audit_table_agrees_with_orchestration_graph():
    from orchestration.graph import GRAPH
    from ssl_core.train.outputs import MODEL

    assert [s.name for s in GRAPH] == [n.asset for n in NODES]
    for spec in GRAPH:
        node = BY_ASSET[spec.name]
        assert node.out_dir_key == spec.out_dir_key, spec.name
        assert set(node.upstream) <= set(spec.deps), spec.name
    assert MODEL_FILE == MODEL


@needs_fmnist
def test_teacher_chain_reaches_the_raw_pool_and_is_consistent(project):
    r = lineage(project, "teacher", subprocess_=True)
    assert r.returncode == 0, r.stdout + r.stderr
    out = lineage_json(project, "teacher")
    assert out["verdict"] == "consistent" and out["problems"] == []
    assert [e["key"] for e in out["chain"]] == TEACHER_CHAIN
    for entry in out["chain"]:
        rec = record(project, entry)
        assert rec["stage"] == entry["stage"]  # the table knows each lineage's stage name
        assert (entry["git_sha"], entry["params_hash"]) == (rec["git_sha"], rec["params_hash"])
        assert entry["params"] == rec["params"] and entry["params_match_file"] is True
        block = stage_block(r.stdout, entry["key"])
        assert (
            f"git {rec['git_sha'][:12]}" in block and f"params {rec['params_hash'][:12]}" in block
        )
        assert {i["name"] for i in entry["inputs"]} == set(rec["input_hashes"])
        for i in entry["inputs"]:
            assert i["recorded"] == rec["input_hashes"][i["name"]]
            assert i["status"] == ("external" if entry["key"] == "raw_pool" else "consistent")
    assert len(out["chain"][0]["git_sha"]) >= 40  # a real commit, not "unknown"
    assert out["chain"][0]["job"]["state"] == "SUCCEEDED"  # teacher ran as a TorchX job
    assert "verdict: consistent" in r.stdout

    images = out["images"]
    manifest = pl.read_parquet(project / "data/manifest" / MANIFEST)
    assert images["manifest_rows"] == manifest.height == sum(images["counts"].values())
    curated = pl.read_parquet(project / "data/curated" / CURATED)
    assert images["used"] == "curated" and images["used_count"] == curated.height


@needs_fmnist
def test_student_by_name_and_model_file_by_path(project):
    out = lineage_json(project, "tiny_student")
    assert out["stages"] == ["students/tiny_student"] and out["verdict"] == "consistent"
    assert [e["key"] for e in out["chain"]] == ["students/tiny_student", *TEACHER_CHAIN]
    student = out["chain"][0]
    rec = record(project, student)
    assert student["lineage"] == "data/students/tiny_student/lineage.json"
    assert (student["git_sha"], student["params_hash"]) == (rec["git_sha"], rec["params_hash"])
    assert {i["name"]: i["asset"] for i in student["inputs"]} == {
        "curated": "curated",
        "teacher": "teacher",
    }
    assert lineage_json(project, "data/teacher/model.safetensors")["stages"] == ["teacher"]


@needs_fmnist
def test_curated_set_accounts_for_every_raw_image(project, tmp_path):
    csv = tmp_path / "images.csv"
    out = lineage_json(project, "curated", "--paths-out", str(csv))
    assert out["verdict"] == "consistent"
    assert [e["key"] for e in out["chain"]] == TEACHER_CHAIN[1:]
    counts = out["images"]["counts"]
    data = project / "data"
    manifest = pl.read_parquet(data / "manifest" / MANIFEST)
    removed = pl.read_parquet(data / "dedup/removed.parquet")
    kept = pl.read_parquet(data / "dedup/kept.parquet")
    curated = pl.read_parquet(data / "curated" / CURATED)
    n_removed = dict(removed["reason"].value_counts().iter_rows())
    assert counts["curated"] == curated.height
    assert counts["quarantined"] == manifest.filter(pl.col("status") != "ok").height > 0
    assert counts["exact_duplicate"] == n_removed["exact_duplicate"] > 0
    assert counts["near_duplicate"] == n_removed["near_duplicate"] > 0
    assert counts["eval_contamination"] == n_removed.get("eval_contamination", 0)
    assert counts["not_sampled"] == kept.height - curated.height > 0
    assert sum(counts.values()) == manifest.height

    table = pl.read_csv(csv)
    assert table.columns == ["path", "reason", "detail"] and table.height == manifest.height
    assert set(table["path"]) == set(manifest["path"])
    used = table.filter(pl.col("reason") == "curated")["path"]
    assert set(used) == set(curated["path"])
    assert dict(table["reason"].value_counts().iter_rows()) == {
        k: v for k, v in counts.items() if v
    }

    pq = tmp_path / "images.parquet"
    r = lineage(project, "curated", "--paths-out", str(pq))
    assert r.returncode == 0, r.stdout + r.stderr
    assert pl.read_parquet(pq).equals(table, null_equal=True)
    for reason, n in counts.items():
        assert any(line.split()[:2] == [reason, str(n)] for line in r.stdout.splitlines())
    assert f"written to {pq}" in r.stdout


@needs_fmnist
def test_unknown_target_lists_valid_names(project):
    r = lineage(project, "no_such_model", subprocess_=True)
    assert r.returncode == 2
    assert "valid names" in r.stderr and "curated" in r.stderr
    assert "students/tiny_student" in r.stderr


@needs_fmnist
def test_stage_that_has_not_run_is_named(project):
    out = lineage_json(project, "report", rc=1)  # the fixture stops before the report
    assert out["verdict"] == "incomplete"
    assert any("report has not run" in p and "sslops report" in p for p in out["problems"])
    assert out["chain"][0]["status"] == "not_run"
    assert [e["key"] for e in out["chain"][1:]] == TEACHER_CHAIN  # still walked up
    lin = project / "data/clusters/lineage.json"
    lin.rename(lin.with_suffix(".bak"))
    try:
        r = lineage(project, "teacher")
    finally:
        lin.with_suffix(".bak").rename(lin)
    assert r.returncode == 1
    assert "verdict: INCOMPLETE" in r.stdout and "clusters has not run" in r.stdout


@needs_fmnist
def test_rewritten_curated_set_breaks_the_teacher_chain(project):
    path = project / "data/curated" / CURATED
    original = path.read_bytes()
    curated = pl.read_parquet(path)
    curated.head(curated.height - 5).write_parquet(path)
    try:
        r = lineage(project, "teacher")
        out = lineage_json(project, "teacher", rc=1)
    finally:
        path.write_bytes(original)
    assert r.returncode == 1 and "verdict: MISMATCH" in r.stdout
    assert "teacher was not built from the current curated" in r.stdout
    assert out["verdict"] == "mismatch"
    teacher = out["chain"][0]
    (check,) = teacher["inputs"]
    assert check["status"] == "mismatch" and check["asset"] == "curated"
    assert check["recorded"] == record(project, teacher)["input_hashes"]["curated"]
    assert check["current"] != check["recorded"]
    # upstream of the curated set nothing changed
    assert all(i["status"] != "mismatch" for e in out["chain"][1:] for i in e["inputs"])
    assert out["images"]["used_count"] == curated.height - 5
    assert lineage_json(project, "teacher")["verdict"] == "consistent"  # restored
