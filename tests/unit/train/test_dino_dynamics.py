"""The DINO self-distillation loop sharpens when it can: identical views of one fixed batch.

The student sees exactly what the teacher scored, so matching the centred, sharpened targets is
possible; the teacher temperature below the student's then feeds back through the EMA and the
targets sharpen, pulling the DINO loss well below log K. A broken loss, centring, head or EMA
update leaves the loss at ~log K (uniform targets). The EMA momentum is low (0.9) so the
feedback acts within the few steps a unit test can afford (benchmarks/dino_identical_views.py
shows the same on the demo recipe).
"""

from __future__ import annotations

import math

import torch

from ssl_core.data.augment import IdenticalViews
from ssl_core.data.dataset import ImageDataset
from ssl_core.models.param_groups import param_groups
from ssl_core.train.schedules import build_schedules
from ssl_core.train.step import Losses, train_step
from ssl_core.train.teacher import build_teacher_model


def test_identical_views_sharpen_the_teacher(image_pool, tiny_train_cfg):
    root, paths = image_pool
    cfg = tiny_train_cfg(
        n_local_crops=0,
        layerscale_init=0.1,  # 1e-5: every image's CLS is ~the same at init (docs/training.md)
        ibot_weight=0.0,
        koleo_weight=0.0,
        mask_probability=0.0,
        momentum_teacher=0.9,
        momentum_teacher_final=0.9,
        lr=1e-3,
        epochs=1,
        warmup_epochs=0.1,
        freeze_last_layer_epochs=0.0,
        teacher_temp_warmup_epochs=0.0,
        teacher_temp=0.04,
        teacher_temp_final=0.04,
    )
    steps = 80
    ds = ImageDataset(root, paths[:32], cfg.image_size)
    x = torch.stack([ds[i][0] for i in range(len(ds))])  # [0, 1]
    model = build_teacher_model(cfg).train()
    opt = torch.optim.AdamW(
        param_groups(model.student, cfg.lr, cfg.weight_decay, 1.0, cfg.patch_embed_lr_mult)
    )
    losses = Losses(cfg.out_dim, cfg.student_temp, cfg.centering)
    sched = build_schedules(cfg, steps / cfg.epochs, steps)
    aug, g = IdenticalViews(model.student.backbone.patch_size), torch.Generator().manual_seed(0)
    log = [
        train_step(model, model.student, opt, losses, x, aug, g, sched.at(i), cfg, False)
        for i in range(steps)
    ]
    log_k = math.log(cfg.out_dim)
    trace = [round(m["dino_loss"], 2) for m in log[::5]]
    assert log[0]["dino_loss"] > 0.9 * log_k, trace  # starts near uniform
    assert log[-1]["dino_loss"] < 0.75 * log_k, trace
    # sharp, not uniform (at init the raw teacher softmax is peaked on the prototypes that
    # every image prefers alike, which centring removes; so compare with log K, not step 0)
    assert log[-1]["teacher_entropy"] < 0.75 * log_k, trace
