"""``benchmarks/gpu_check.py --dry-run``: the GPU check end to end on CPU with tiny sizes, so
that the one prepared GPU run has been exercised before the day (~1.5 min on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
STEPS = ["environment", "train_step", "kmeans", "demo_pool", "teacher"]


@pytest.mark.skipif(
    not FMNIST.is_file(),
    reason=f"{FMNIST} missing: the demo data (apt-get install -y dataset-fashion-mnist, or "
    "make setup) is needed to build the dry run's demo pool",
)
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out, scratch = tmp_path / "results", tmp_path / "scratch"
    env = {**os.environ, "SSLOPS_NO_PROGRESS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run",
           "--out", str(out), "--scratch", str(scratch)]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    assert not (out / "gpu_check_gpu.json").exists()
    doc = json.loads((out / "gpu_check_cpu.json").read_text())
    assert doc["dry_run"] is True
    assert list(doc["steps"]) == STEPS
    for name, step in doc["steps"].items():
        assert step["status"] == "ok", (name, step.get("detail"))
        assert 0 < step["seconds"] <= step["cap_s"] + 15

    goals = [g["goal"] for g in doc["goals"]]
    assert len(goals) == 5
    assert any("ViT-S/14" in g for g in goals) and any("ViT-B/14" in g for g in goals)
    assert any("MFU" in g for g in goals) and any("k-means" in g for g in goals)
    assert any("raw-pixel" in g for g in goals)
    assert all(g["verdict"].startswith("dry run") for g in doc["goals"])

    ts = doc["steps"]["train_step"]["presets"]["tiny"]
    assert ts["img_s_packed"] > 0 and ts["loss_rel_diff"] <= ts["loss_tol"]
    km = doc["steps"]["kmeans"]
    assert km["gpu"]["status"] == "skipped: no GPU" and km["cpu"]["hkmeans_s"] > 0
    assert not (scratch / "kmeans_x.npy").exists()  # the data is removed after the step
    t = doc["steps"]["teacher"]
    assert t["steps_done"] == 3 and len(t["curve"]) >= 1 and 0 <= t["raw_pixels"] <= 1
    assert t["beats_raw"] in (True, False)

    md = (out / "gpu_check_cpu.md").read_text()
    assert md.startswith("# GPU check (dry run") and "## Goals" in md
