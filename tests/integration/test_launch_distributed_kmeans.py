"""The clusters stage as a 2-process TorchX job (``local_cwd``, torchrun, gloo), for real: it
writes the assignments a 1-rank distributed run computes; at 1x1 the stage stays in process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from ssl_core.config import load_params
from ssl_core.curation.synthetic import hierarchical_mixture
from ssl_core.launch import clusters_job
from ssl_core.stages.cluster import ASSIGNMENTS, level_col

SSLOPS = str(Path(sys.executable).with_name("sslops"))
LEVELS = [12, 4]


def _project(tmp: Path, nproc: int) -> Path:
    """Embeddings (float16, like an embedding cache may be) and a dedup result with gaps."""
    proj = tmp / f"proj{nproc}"
    (proj / "data/embeddings").mkdir(parents=True)
    (proj / "data/dedup").mkdir(parents=True)
    x, _ = hierarchical_mixture(640, dim=16, n_super=4, n_sub=3, seed=0)
    np.save(proj / "data/embeddings/pool.npy", x.astype(np.float16))
    rows = np.flatnonzero(np.random.default_rng(0).random(len(x)) > 0.05)
    pl.DataFrame(
        {
            "path": [f"img{i}.png" for i in rows],
            "sha256": [f"{i:064x}" for i in rows],
            "emb_row": rows,
        }  # fmt: skip
    ).write_parquet(proj / "data/dedup/kept.parquet")
    params = {
        "cluster": {"levels": LEVELS, "n_resampling_steps": 1, "n_iter": 10},
        "launch": {
            "poll_interval_s": 0.2,
            "heartbeat_s": 2.0,
            "clusters": {"nproc_per_node": nproc, "gpus": 0},
        },  # fmt: skip
    }
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return proj


def _sslops(proj: Path, *args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {"SSLOPS_NO_PROGRESS": "1", "PATH": path}
    return subprocess.run([SSLOPS, "--quiet", *args], cwd=proj, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})  # fmt: skip


@pytest.mark.timeout(180)
def test_two_rank_job_writes_the_one_rank_assignments(tmp_path, monkeypatch):
    proj = _project(tmp_path, nproc=2)
    r = _sslops(proj, "clusters")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "local_cwd://" in r.stdout
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["stage"] == "clusters" and result["ranks"] == 2
    assert result["kmeans"] == "distributed" and result["levels"] == LEVELS
    lineage = json.loads((proj / "data/clusters/lineage.json").read_text())
    assert lineage["job"]["state"] == "SUCCEEDED"
    job = pl.read_parquet(proj / "data/clusters" / ASSIGNMENTS)

    # the same stage, one rank, no process group, in this process
    monkeypatch.chdir(proj)
    params = load_params(proj / "params.yaml")
    one_dir = str(tmp_path / "one")
    params = params.model_copy(
        update={"paths": params.paths.model_copy(update={"clusters_dir": one_dir})}
    )
    assert clusters_job.run(params, progress=False)["ranks"] == 1
    one = pl.read_parquet(Path(one_dir) / ASSIGNMENTS)
    assert job["path"].to_list() == one["path"].to_list()
    for lv in range(len(LEVELS)):
        np.testing.assert_array_equal(job[level_col(lv)].to_numpy(), one[level_col(lv)].to_numpy())
        np.testing.assert_allclose(
            np.load(proj / f"data/clusters/centroids_l{lv}.npy"),
            np.load(Path(one_dir) / f"centroids_l{lv}.npy"),
            rtol=1e-5, atol=1e-5,
        )  # fmt: skip
    assert job[level_col(0)].n_unique() == LEVELS[0]


def test_one_rank_stays_in_process_with_faiss(tmp_path):
    proj = _project(tmp_path, nproc=1)
    r = _sslops(proj, "clusters")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert "kmeans" not in result and "local_cwd://" not in r.stdout
    assert not (proj / "data/.jobs").exists() or not list((proj / "data/.jobs").glob("clusters-*"))
    assert "job" not in json.loads((proj / "data/clusters/lineage.json").read_text())
