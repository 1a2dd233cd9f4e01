"""The training entry point under a real ``torchrun`` (what a TorchX job runs): two CPU ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml

from ssl_core.models.official import load_backbone


def test_torchrun_two_ranks_trains_and_rank0_writes(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    cfg = tiny_train_cfg(epochs=1, batch_size=16, num_threads=1)  # 64 images / 2 ranks: 2 steps
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": cfg.model_dump(mode="json")}))
    paths_file = tmp_path / "paths.parquet"
    pl.DataFrame({"path": paths}).write_parquet(paths_file)
    out = tmp_path / "teacher"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun), "--standalone", "--nproc_per_node", "2",
            "-m", "ssl_core.train.launch", "--params", str(params), "--role", "teacher",
            "--root", str(root), "--paths-file", str(paths_file), "--out", str(out),
            "--no-progress",
        ],
        capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parents[3],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(summaries) == 1  # rank 0 prints, rank 1 stays quiet
    s = summaries[0]
    assert s["world_size"] == 2 and s["steps"] == 2
    assert json.loads((out / "summary.json").read_text())["weights_sha256"] == s["weights_sha256"]
    assert load_backbone(out / "model.safetensors").num_register_tokens == 2
