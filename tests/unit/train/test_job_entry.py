"""The job command per process layout, and the job entry point run in this process
(in tests/unit/train for its image_pool fixture)."""

from __future__ import annotations

import json
import sys

import polars as pl
import yaml

from ssl_core.config import load_params
from ssl_core.launch import job
from ssl_core.launch.component import job_command, stage_app
from ssl_core.launch.settings import JobResources
from ssl_core.stages.curate import CURATED
from tests.unit.train.conftest import _tiny_train_cfg


def test_single_process_runs_the_job_module_without_torchrun():
    cmd = job_command("students", "p.yaml", JobResources(), "py")
    assert cmd == ["py", "-m", "ssl_core.launch.job", "students", "--params", "p.yaml"]


def test_one_node_several_processes_is_standalone_torchrun():
    cmd = job_command("teacher", "p.yaml", JobResources(nproc_per_node=2), "py")
    assert cmd[:6] == ["py", "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    assert cmd[6:] == ["-m", "ssl_core.launch.job", "teacher", "--params", "p.yaml"]


def test_local_cwd_job_is_this_interpreter_without_image_or_volume():
    launch = load_params("params.yaml").launch
    assert launch.scheduler == "local_cwd"  # the default the demo and the tests use
    (role,) = stage_app("embeddings", launch, "p.yaml", "sslops-embeddings", env={"X": "1"}).roles
    assert role.entrypoint == sys.executable and role.image == "" and role.mounts == []
    assert role.env["X"] == "1" and role.env["SSLOPS_PROGRESS"] == "lines"
    assert "HOME" not in role.env  # container-only settings stay out of local jobs


def test_job_entry_runs_the_stage_and_prints_one_result_line(image_pool, tmp_path, capsys,
                                                             monkeypatch):  # fmt: skip
    root, paths = image_pool
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/manifest").mkdir(parents=True)
    (tmp_path / "data/manifest/labels.json").write_text(json.dumps({"eval_root": None}))
    pl.DataFrame(schema={"path": pl.String}).write_parquet("data/manifest/eval_set.parquet")
    (tmp_path / "data/curated").mkdir()
    pl.DataFrame({"path": paths}).write_parquet(tmp_path / "data/curated" / CURATED)
    params = {"data": {"source": "folder", "labels": "none"}, "paths": {"pool": str(root)},
              "train": _tiny_train_cfg(max_steps=1).model_dump(mode="json")}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert job.main(["teacher", "--params", "params.yaml"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if job.RESULT_PREFIX in ln]
    result = json.loads(line.removeprefix(job.RESULT_PREFIX))
    assert result["stage"] == "teacher" and result["steps"] == 1
    assert (tmp_path / "data/teacher/lineage.json").is_file()


def test_job_entry_reports_a_bad_params_file(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("train: {lr: -1}\n")
    assert job.main(["students", "--params", str(tmp_path / "p.yaml")]) == 2
    assert "train.lr" in capsys.readouterr().err
