"""The shared training loop (DINOv2 recipe: DINO + iBOT + KoLeo, EMA or frozen teacher, multi-crop).

:func:`fit` runs the loop for both roles: teacher pretraining (:mod:`ssl_core.train.teacher`)
and distillation (:mod:`ssl_core.train.distill`). It writes into ``out_dir``:

* ``model.safetensors`` — EMA backbone, official DINOv2 layout (``load_backbone``);
* ``head.safetensors`` — EMA DINO (+ iBOT) head, head settings in the metadata (distillation
  targets);
* ``config.json`` — ViT config, head config, the train config;
* ``metrics.jsonl`` — one line per ``log_every`` steps (losses, lr, wd, momentum, teacher temp,
  teacher entropies, feature std, images/s);
* ``summary.json`` — ``final_loss``, ``feature_std``, ``knn_top1``, ``chance``, ``steps``,
  ``images_per_s``, ``wall_s`` and more;
* ``checkpoint.pt`` — every ``checkpoint_every`` steps and at the end (resume is bit-exact on CPU).

Single process, or under ``torchrun`` (``RANK``/``WORLD_SIZE`` set): DDP over the student, or
FSDP for big presets (:mod:`ssl_core.train.fsdp`), gloo on CPU, nccl on CUDA; each rank reads its
``DistributedSampler`` shard; rank 0 writes. Randomness and exact resume:
:mod:`ssl_core.train.runtime`. Measured throughput and the CPU recipe: ``docs/training.md``
and ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ssl_core.config import DistillConfig, TrainConfig
from ssl_core.data.augment import MultiCropAugmentation, MultiCropConfig
from ssl_core.data.dataset import ImageDataset, collate_skip_bad
from ssl_core.models.official import save_backbone
from ssl_core.models.param_groups import param_groups
from ssl_core.train.checkpoint import get_rng_state, restore_run, save_checkpoint
from ssl_core.train.collapse import CollapseError, CollapseMonitor
from ssl_core.train.fsdp import resolve_parallelism
from ssl_core.train.model_state import make_model_state
from ssl_core.train.outputs import (
    CHECKPOINT,
    HEAD,
    HEAD_METADATA_KEY,
    MODEL,
    eval_feature_std,
    rewrite_metrics,
    save_head,
    weights_sha256,
)
from ssl_core.train.runtime import ResumableSampler, Runtime, step_seed
from ssl_core.train.schedules import build_schedules
from ssl_core.train.ssl_model import SSLModel
from ssl_core.train.step import Losses, resolve_packed, train_step
from ssl_core.utils.atomic import write_json
from ssl_core.utils.progress import progress_bar

__all__ = [
    "HEAD",
    "HEAD_METADATA_KEY",
    "MODEL",
    "CollapseError",
    "Runtime",
    "StepHook",
    "fit",
]

log = logging.getLogger("sslops.train")

StepHook = Callable[[int, dict[str, float]], None]


# ----------------------------------------------------------------------------- loop
def fit(
    cfg: TrainConfig | DistillConfig,
    rt: Runtime,
    model: SSLModel,
    image_size: int,
    root: Path,
    paths: list[str],
    out_dir: Path,
    config_json: dict[str, Any],
    knn_probe: Callable[[nn.Module], float] | None,
    chance: float,
    resume: bool,
    progress: bool,
    on_step: StepHook | None = None,
) -> dict[str, Any]:
    """Shared loop of teacher training and distillation; see the module docstring.

    The trained network is ``model.student``; targets come from ``model.target``; the EMA
    (``model.ema``) is exported.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = rt.device
    model.to(device).train()
    n_params = sum(p.numel() for p in model.student.parameters())
    parallelism = resolve_parallelism(cfg.distributed, rt.world, n_params)
    # FSDP shards before the optimizer sees the parameters (they become DTensors)
    tensors = make_model_state(parallelism, model, device, rt.world, rt.is_main)
    patch = model.student.backbone.patch_size
    mc = MultiCropConfig.for_recipe(cfg, image_size, patch)
    augment = MultiCropAugmentation(mc, patch)
    packed = resolve_packed(cfg.packed, device)

    ds = ImageDataset(root, paths, image_size, channels=3)
    per_rank = math.ceil(len(ds) / rt.world)
    steps_per_epoch = per_rank // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(ds)} images over {rt.world} process(es) is less than one batch of "
            f"{cfg.batch_size}; lower batch_size"
        )
    full = cfg.epochs * steps_per_epoch
    total_steps = min(full, cfg.max_steps) if cfg.max_steps else full
    sched = build_schedules(cfg, total_steps / cfg.epochs, total_steps)
    # collapse checks start after the lr warm-up: at init (layer-scale 1e-5) the teacher's CLS
    # is almost the same for every image, which is not a collapse
    grace = max(int(np.argmax(sched.lr)), cfg.collapse_patience)

    optimizer = torch.optim.AdamW(
        param_groups(
            model.student, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.patch_embed_lr_mult
        ),
        lr=cfg.lr,
        betas=(0.9, 0.999),
    )
    losses = Losses(model.student.head_config["out_dim"], cfg.student_temp, cfg.centering).to(
        device
    )
    cfg_json = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)

    state: dict[str, Any] = {
        "step": 0, "epoch": 0, "batch": 0, "n_bad": 0, "images": 0, "wall_s": 0.0,
        "recent_losses": [], "last": {},
    }  # fmt: skip
    ckpt_path = out_dir / CHECKPOINT
    resumed_from = None
    if resume and ckpt_path.exists():
        train_state = restore_run(ckpt_path, cfg_json, tensors, optimizer, losses, parallelism)
        if train_state is not None:
            state.update(train_state)
            resumed_from = state["step"]
            log.info("resumed from %s at step %d", ckpt_path, resumed_from)
    metrics_path = out_dir / "metrics.jsonl"
    if rt.is_main:
        if resumed_from is None:
            metrics_path.unlink(missing_ok=True)
        else:
            rewrite_metrics(metrics_path, resumed_from)

    student: nn.Module = model.student
    if parallelism == "ddp":
        student = DistributedDataParallel(
            model.student, device_ids=[device.index] if device.type == "cuda" else None
        )
        if resumed_from is None:  # EMA starts as the (broadcast) student on every rank
            model.ema.load_state_dict(model.student.state_dict())

    def checkpoint() -> None:
        # collective under FSDP: rank 0 ends up with the full tensors
        model_sd, optim_sd = tensors.full_model_state(), tensors.full_optimizer_state(optimizer)
        if rt.is_main:
            save_checkpoint(
                ckpt_path,
                {
                    "model": model_sd,
                    "losses": losses.state_dict(),
                    "optimizer": optim_sd,
                    "optimizer_format": tensors.optimizer_format,
                    "train_state": dict(state),
                    "rng": get_rng_state(),
                    "config": cfg_json,
                },
            )
        rt.barrier()

    bar = progress_bar(
        total=total_steps,
        initial=state["step"],
        enabled=progress and rt.is_main,
        desc=config_json.get("role", "train"),
        dynamic_ncols=True,
    )
    t_start = time.perf_counter()
    wall_before = state["wall_s"]
    timed_images, timed_s = 0, 0.0
    window: list[dict[str, float]] = []
    monitor = CollapseMonitor(grace, cfg.collapse_patience, rt.all_max)
    epoch = state["epoch"]
    while state["step"] < total_steps and epoch < cfg.epochs:
        start = state["batch"] * cfg.batch_size if epoch == state["epoch"] else 0
        sampler = ResumableSampler(ds, rt.world, rt.rank, cfg.seed, start)
        sampler.set_epoch(epoch)
        loader = DataLoader(
            ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate_skip_bad,
            drop_last=True,
            pin_memory=device.type == "cuda",
        )
        first_batch = start // cfg.batch_size
        for bi, (images, _idx, n_bad) in enumerate(loader, start=first_batch):
            if state["step"] >= total_steps:
                break
            t0 = time.perf_counter()
            state["n_bad"] += n_bad
            state["epoch"], state["batch"] = epoch, bi + 1
            if rt.all_max([-float(images.shape[0])])[0] > -2:  # some rank has < 2 good images
                continue
            step = state["step"]
            g = torch.Generator().manual_seed(step_seed(cfg.seed, rt.rank, step))
            torch.manual_seed(step_seed(cfg.seed, rt.rank, step) ^ 0x5EED)  # drop-path
            s = sched.at(step)
            m = train_step(
                model,
                student,
                optimizer,
                losses,
                images.to(device, non_blocking=True),
                augment,
                g,
                s,
                cfg,
                packed,
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            n_img = images.shape[0] * rt.world
            state["step"] = step + 1
            state["images"] += n_img
            if step > 0 or resumed_from is not None:  # first step pays one-off costs
                timed_images, timed_s = timed_images + n_img, timed_s + dt

            monitor.update(step, m)

            rec = {
                "step": step + 1,
                "epoch": epoch,
                **m,
                "lr": s["lr"],
                "wd": s["wd"],
                "momentum": s["momentum"],
                "teacher_temp": s["teacher_temp"],
                "images_per_s": n_img / dt,
            }
            window.append(rec)
            state["last"] = rec
            state["recent_losses"] = [*state["recent_losses"], m["loss"]][-cfg.log_every :]
            bar.set_postfix(loss=f"{m['loss']:.3f}", img_s=f"{n_img / dt:.0f}", refresh=False)
            bar.update(1)
            if rt.is_main and (state["step"] % cfg.log_every == 0 or state["step"] == total_steps):
                mean = {k: float(np.mean([r[k] for r in window])) for k in rec if k != "step"}
                with metrics_path.open("a") as f:
                    f.write(json.dumps({**mean, "step": state["step"], "epoch": epoch}) + "\n")
                window = []
            if (
                knn_probe is not None
                and cfg.knn_every
                and state["step"] % cfg.knn_every == 0
                and state["step"] < total_steps
            ):  # the kNN curve; the probe draws no random numbers, so resume stays exact
                net = tensors.gathered_ema()  # collective under FSDP
                if rt.is_main:
                    acc = float(knn_probe(net.backbone))
                    with metrics_path.open("a") as f:
                        f.write(json.dumps({"step": state["step"], "knn_top1": acc}) + "\n")
                    bar.write(f"step {state['step']}: kNN top-1 {acc:.3f}")
            if on_step is not None:
                on_step(state["step"], rec)
            if state["step"] % cfg.checkpoint_every == 0 and state["step"] < total_steps:
                state["wall_s"] = wall_before + time.perf_counter() - t_start
                checkpoint()
        else:  # epoch exhausted
            epoch += 1
            state["epoch"], state["batch"] = epoch, 0
            continue
        break  # total_steps reached inside the epoch
    bar.close()
    state["wall_s"] = wall_before + time.perf_counter() - t_start
    checkpoint()

    ema = tensors.gathered_ema()  # FSDP: the unsharded copy on rank 0, None elsewhere
    sha = weights_sha256(ema.backbone) if ema is not None else ""
    summary: dict[str, Any] = {}
    if rt.is_main:
        # the unsharded FSDP copy lives on the CPU; everything else on the training device
        feature_std = eval_feature_std(ema.backbone, ds, next(ema.parameters()).device)
        if state["step"] > grace and feature_std < 1e-6:
            raise CollapseError(
                f"collapse: final teacher features are constant (std {feature_std:.2e})"
            )
        knn = float(knn_probe(ema.backbone.eval())) if knn_probe is not None else None
        ema.backbone.train(False)
        save_backbone(ema.backbone, out_dir / MODEL)
        save_head(ema, out_dir / HEAD)
        write_json(
            out_dir / "config.json",
            {**config_json, "vit": ema.backbone.config.to_dict(), "head": ema.head_config},
        )
        last = state["last"]
        summary = {
            "final_loss": float(np.mean(state["recent_losses"] or [float("nan")])),
            "last_step_loss": float(last.get("loss", float("nan"))),
            "feature_std": feature_std,
            "knn_top1": knn if knn is not None else 0.0,
            "knn_probed": knn is not None,
            "chance": float(chance),
            "steps": int(state["step"]),
            "epochs": cfg.epochs,
            "images_seen": int(state["images"]),
            "images_per_s": timed_images / timed_s if timed_s > 0 else 0.0,
            "wall_s": float(state["wall_s"]),
            "n_bad_files": int(state["n_bad"]),
            "teacher_entropy": float(last.get("teacher_entropy", float("nan"))),
            "teacher_marginal_entropy": float(last.get("teacher_marginal_entropy", float("nan"))),
            "resumed_from_step": resumed_from,
            "packed": packed,
            "device": str(device),
            "world_size": rt.world,
            "parallelism": parallelism,
            "weights_sha256": sha,
        }
        write_json(out_dir / "summary.json", summary)
    rt.barrier()
    return summary or {"steps": int(state["step"]), "weights_sha256": sha, "rank": rt.rank}
