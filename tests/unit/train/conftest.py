"""Fixtures for the training tests: a few dozen tiny generated images on disk."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_core.config import TrainConfig
from ssl_core.data.augment import MultiCropAugmentation, MultiCropConfig
from ssl_core.data.dataset import ImageDataset
from ssl_core.models.param_groups import param_groups
from ssl_core.train.schedules import build_schedules
from ssl_core.train.step import Losses, train_step
from ssl_core.train.teacher import build_teacher_model

# Files every training run (teacher and student) writes into its output folder.
OUTPUT_FILES = (
    "model.safetensors",
    "head.safetensors",
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoint.pt",
)


def free_port() -> int:
    """A TCP port nobody listens on now (MASTER_PORT of the multi-process tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_images(root: Path, n: int, seed: int = 0, size: int = 28) -> list[str]:
    """``n`` grey PNGs of random rectangles / blobs (28x28, like Fashion-MNIST)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = np.zeros((size, size), np.float32)
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(4, size - 4, 2)
            ry, rx = rng.uniform(2, 9, 2)
            if rng.random() < 0.5:
                img += ((abs(yy - cy) < ry) & (abs(xx - cx) < rx)) * rng.uniform(0.3, 1)
            else:
                img += np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)) * rng.uniform(
                    0.3, 1
                )
        name = f"img_{i:03d}.png"
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="L").save(root / name)
        paths.append(name)
    return paths


@pytest.fixture(scope="session")
def image_pool(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("pool")
    return root, make_images(root, 64)


def _tiny_train_cfg(**overrides: object) -> TrainConfig:
    """A CPU-cheap recipe: tiny backbone at 16 px, small heads, 2 local crops."""
    base = dict(
        preset="tiny",
        image_size=16,
        epochs=2,
        batch_size=16,
        out_dim=64,
        head_hidden_dim=64,
        head_bottleneck_dim=32,
        n_local_crops=2,
        num_register_tokens=2,
        warmup_epochs=0.5,
        freeze_last_layer_epochs=0.25,
        teacher_temp_warmup_epochs=0.5,
        log_every=2,
        checkpoint_every=1000,
        num_threads=1,
        seed=0,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_train_cfg():
    """Factory: ``tiny_train_cfg(max_steps=4, ...)`` -> a cheap :class:`TrainConfig`."""
    return _tiny_train_cfg


def first_images(image_pool, cfg, n: int = 16) -> torch.Tensor:
    """The pool's first ``n`` images as one (n, 3, S, S) batch at ``cfg.image_size``."""
    root, paths = image_pool
    ds = ImageDataset(root, paths[:n], cfg.image_size)
    return torch.stack([ds[i][0] for i in range(n)])


def loss_curve(optimizer_kwargs: dict, image_pool, cfg, steps: int) -> list[float]:
    """Losses of ``steps`` fixed-seed train steps of a fresh model on one batch."""
    model = build_teacher_model(cfg).train()
    opt = torch.optim.AdamW(
        param_groups(model.student, cfg.lr, cfg.weight_decay, 1.0, cfg.patch_embed_lr_mult),
        lr=cfg.lr,
        **optimizer_kwargs,
    )
    losses = Losses(cfg.out_dim, cfg.student_temp, cfg.centering)
    sched = build_schedules(cfg, steps / cfg.epochs, steps)
    aug = MultiCropAugmentation(MultiCropConfig.for_recipe(cfg, cfg.image_size, 4), 4)
    x = first_images(image_pool, cfg)
    out = []
    for i in range(steps):
        g = torch.Generator().manual_seed(i)
        torch.manual_seed(i)
        out.append(train_step(model, model.student, opt, losses, x, aug, g, sched.at(i), cfg, False)["loss"])  # fmt: skip
    return out
