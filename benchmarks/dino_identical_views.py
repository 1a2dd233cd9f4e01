"""Sanity check of the DINO self-distillation loop: two IDENTICAL views of one fixed batch.

The student sees exactly what the teacher scored (no augmentation, no local crops; iBOT, KoLeo
and masking off by default), so matching the centred, sharpened targets is always possible and
the teacher temperature below the student's should sharpen the targets through the EMA: the
DINO loss falls well below log K. How fast depends on the EMA momentum (the feedback goes
through the teacher). Uses the ``train:`` recipe of params.yaml with overrides; needs the demo's
eval images (``make demo``).

Usage::

    .venv/bin/python benchmarks/dino_identical_views.py --steps 150 --set momentum_teacher=0.9 \\
        --set momentum_teacher_final=0.9
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ssl_core.config import TrainConfig, load_params, parse_overrides  # noqa: E402
from ssl_core.data.augment import IdenticalViews  # noqa: E402
from ssl_core.data.eval_set import load_eval_set  # noqa: E402
from ssl_core.eval.probe import sample_eval_images  # noqa: E402
from ssl_core.models.param_groups import param_groups  # noqa: E402
from ssl_core.train.schedules import build_schedules  # noqa: E402
from ssl_core.train.step import Losses, train_step  # noqa: E402
from ssl_core.train.teacher import build_teacher_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--print-every", type=int, default=25)
    ap.add_argument("--set", action="append", default=[], help="train: override key=value")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    args = ap.parse_args()
    params = load_params(args.params)
    upd = {"n_local_crops": 0, "ibot_weight": 0.0, "koleo_weight": 0.0, "mask_probability": 0.0}
    try:
        upd.update(parse_overrides(args.set, TrainConfig))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    cfg = TrainConfig.model_validate({**params.train.model_dump(), **upd})
    torch.set_num_threads(cfg.num_threads or 1)
    x = sample_eval_images(load_eval_set(params), cfg.image_size, args.batch)

    model = build_teacher_model(cfg).train()
    opt = torch.optim.AdamW(
        param_groups(
            model.student, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.patch_embed_lr_mult
        )
    )
    losses = Losses(cfg.out_dim, cfg.student_temp, cfg.centering)
    epochs = cfg.epochs if isinstance(cfg.epochs, int) else 1  # auto: one pass of --steps
    sched = build_schedules(cfg, args.steps / epochs, args.steps)
    aug, g = IdenticalViews(model.student.backbone.patch_size), torch.Generator().manual_seed(0)
    print(f"overrides {upd}; log K = {math.log(cfg.out_dim):.3f}")
    for i in range(args.steps):
        s = sched.at(i)
        m = train_step(model, model.student, opt, losses, x, aug, g, s, cfg, False)
        if i % args.print_every == 0 or i == args.steps - 1:
            print(
                f"step {i:4d}  dino {m['dino_loss']:.3f}  teacher entropy "
                f"{m['teacher_entropy']:.3f}  T {s['teacher_temp']:.3f}  momentum "
                f"{s['momentum']:.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
