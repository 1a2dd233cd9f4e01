"""FSDP2 with two CPU processes (gloo): same result as DDP, and bit-exact resume after a kill."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from ssl_core.train.fsdp import FSDP_MIN_PARAMS, resolve_parallelism
from ssl_core.train.teacher import train_teacher
from tests.unit.train.conftest import free_port


class _Kill(RuntimeError):
    pass


def _worker(rank, world, port, cfg_json, root, paths, out, kill_at):
    from ssl_core.config import TrainConfig

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    cfg = TrainConfig.model_validate_json(cfg_json)

    def on_step(step, _m):
        if kill_at and step == kill_at:
            raise _Kill(step)

    try:
        res = train_teacher(cfg, Path(root), paths, Path(out), progress=False, on_step=on_step)
    except _Kill:
        return
    Path(out, f"rank{rank}.json").write_text(json.dumps(res))


def _run(cfg, root, paths, out: Path, kill_at: int = 0) -> dict:
    mp.spawn(
        _worker,
        args=(2, free_port(), cfg.model_dump_json(), str(root), paths, str(out), kill_at),
        nprocs=2,
        join=True,
    )
    return json.loads((out / "rank0.json").read_text()) if not kill_at else {}


def test_resolve_parallelism():
    assert resolve_parallelism("auto", 1, 10**9) == "single"
    assert resolve_parallelism("auto", 2, FSDP_MIN_PARAMS) == "fsdp"
    assert resolve_parallelism("auto", 2, 22_000_000) == "ddp"  # ViT-S/14
    assert resolve_parallelism("fsdp", 8, 1) == "fsdp"


def test_fsdp_matches_ddp_and_resumes_bit_exact(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    # 64 images over 2 ranks x batch 16 = 2 steps per epoch, 4 steps; checkpoint at step 2
    # fp32: the DDP comparison below is to float32 round-off (bf16 would round differently)
    cfg = tiny_train_cfg(
        epochs=2, batch_size=16, num_threads=1, checkpoint_every=2, precision="fp32"
    )
    fsdp_cfg = cfg.model_copy(update={"distributed": "fsdp"})
    full = _run(fsdp_cfg, root, paths, tmp_path / "fsdp")
    assert full["parallelism"] == "fsdp" and full["steps"] == 4
    _run(fsdp_cfg, root, paths, tmp_path / "cut", kill_at=3)  # checkpoint at 2, dies after 3
    resumed = _run(fsdp_cfg, root, paths, tmp_path / "cut")
    assert resumed["resumed_from_step"] == 2
    assert resumed["weights_sha256"] == full["weights_sha256"]
    ddp = _run(cfg, root, paths, tmp_path / "ddp")
    assert ddp["parallelism"] == "ddp"
    a, b = (
        load_file(tmp_path / "fsdp" / "model.safetensors"),
        load_file(tmp_path / "ddp" / "model.safetensors"),
    )
    assert a.keys() == b.keys()
    for k in a:  # same maths, other reduction order: equal to float32 round-off
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    ck_f = torch.load(tmp_path / "fsdp" / "checkpoint.pt", weights_only=True)["model"]
    ck_d = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["model"]
    assert ck_f.keys() == ck_d.keys()  # one checkpoint layout for every parallelism
