"""Two CPU processes (gloo) train a few DDP steps: both ranks end with identical weights, and
only rank 0 writes the outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.multiprocessing as mp

from ssl_core.train.teacher import train_teacher
from tests.unit.train.conftest import free_port


def _worker(rank: int, world: int, port: int, cfg_json: str, root: str, paths: list, out: str):
    from ssl_core.config import TrainConfig

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    cfg = TrainConfig.model_validate_json(cfg_json)
    res = train_teacher(cfg, Path(root), paths, Path(out), progress=False)
    Path(out, f"rank{rank}.json").write_text(json.dumps(res))


def test_two_ranks_gloo_identical_weights(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    # 64 images over 2 ranks x batch 16 = 2 steps per epoch
    cfg = tiny_train_cfg(epochs=2, batch_size=16, num_threads=1)
    mp.spawn(
        _worker,
        args=(2, free_port(), cfg.model_dump_json(), str(root), paths, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["steps"] == r1["steps"] == 4
    assert r0["world_size"] == 2
    assert r0["weights_sha256"] == r1["weights_sha256"]
    assert (tmp_path / "model.safetensors").is_file() and "final_loss" not in r1
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # rank 0 only, log_every=2
