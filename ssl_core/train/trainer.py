"""The shared training engine (DINOv2 recipe: DINO + iBOT + KoLeo, EMA or frozen teacher,
multi-crop), for both roles: teacher pretraining (:mod:`ssl_core.train.teacher`) and
distillation (:mod:`ssl_core.train.distill`). Its pieces, top to bottom:

* :class:`RunSpec` (what to train, where to write) and :class:`RunOptions` (probe, resume,
  progress, hook);
* :class:`Trainer`: built from them (model state, data, schedules, optimiser, loss buffers),
  its run state a :class:`ssl_core.train.train_state.TrainState`; :meth:`Trainer.step` is one
  optimisation step, :meth:`Trainer.train` the loop (logging, kNN curve, collapse monitor,
  hook, checkpoint cadence), :meth:`Trainer.finish` writes the outputs;
* :func:`fit`: the three in order.

It writes into ``out_dir``:

* ``model.safetensors`` — EMA backbone, official DINOv2 layout (``load_backbone``);
* ``head.safetensors`` — EMA DINO (+ iBOT) head, head settings in the metadata (distillation
  targets);
* ``config.json`` — ViT config, head config, the train config;
* ``metrics.jsonl`` — one line per ``log_every`` steps (losses, lr, wd, momentum, teacher temp,
  teacher entropies, feature std, images/s), one per kNN probe (``knn_every``);
* ``summary.json`` — ``final_loss``, ``feature_std``, ``knn_top1``, ``chance``, ``steps``,
  ``images_per_s``, ``wall_s`` and more;
* ``checkpoint.pt`` — named parts (model, losses, optimizer, train_state, rng, config) every
  ``checkpoint_every`` steps and at the end (resume is bit-exact on CPU), with
  ``checkpoint.pt.record.json`` (its size and sha256): a checkpoint that does not match its
  record is deleted with a warning and the run starts over instead of resuming from it.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ssl_core.config import DistillConfig, TrainConfig
from ssl_core.data.augment import MultiCropAugmentation, MultiCropConfig
from ssl_core.data.dataset import ImageDataset, collate_skip_bad
from ssl_core.models.official import save_backbone
from ssl_core.models.param_groups import param_groups
from ssl_core.train.checkpoint import (
    get_rng_state,
    record_path,
    restore_run,
    save_checkpoint,
    verify_checkpoint,
)
from ssl_core.train.collapse import CollapseError, CollapseMonitor
from ssl_core.train.fsdp import resolve_parallelism
from ssl_core.train.metrics_log import MetricsLog, Throughput
from ssl_core.train.model_state import make_model_state
from ssl_core.train.outputs import (
    CHECKPOINT,
    HEAD,
    HEAD_METADATA_KEY,
    MODEL,
    eval_feature_std,
    save_head,
    weights_sha256,
)
from ssl_core.train.precision import resolve_precision
from ssl_core.train.runtime import ResumableSampler, Runtime, step_seed
from ssl_core.train.schedules import build_schedules
from ssl_core.train.ssl_model import SSLModel, SSLNet
from ssl_core.train.step import Losses, resolve_packed, train_step
from ssl_core.train.train_state import TrainState
from ssl_core.utils.atomic import write_json
from ssl_core.utils.failpoints import failpoint
from ssl_core.utils.progress import progress_bar

__all__ = [
    "HEAD",
    "HEAD_METADATA_KEY",
    "MODEL",
    "CollapseError",
    "RunOptions",
    "RunSpec",
    "Runtime",
    "StepHook",
    "TrainState",
    "Trainer",
    "fit",
]

log = logging.getLogger("sslops.train")

StepHook = Callable[[int, dict[str, float]], None]
"""``on_step(step, record)``, called after every optimisation step (step counted from 1)."""


# teacher-score entropies of the last step in the summary (absent without prototypes)
ENTROPY_KEYS = ("teacher_entropy", "teacher_marginal_entropy")


@dataclass(frozen=True)
class RunSpec:
    """What to train on which images, and where to write it."""

    cfg: TrainConfig | DistillConfig
    """The recipe (``params.yaml`` ``train:`` or ``distill:``)."""
    model: SSLModel
    """Student + EMA (+ frozen teacher); ``model.student`` is trained, ``model.ema`` exported."""
    image_size: int
    """Global crop size in pixels."""
    root: Path
    """Pool root the paths are relative to."""
    paths: Sequence[str]
    """Image paths (``file.parquet::row`` entries allowed)."""
    out_dir: Path
    """Output folder (files: module docstring)."""
    config_json: dict[str, Any]
    """Written into ``config.json`` next to the ViT and head configs; ``role`` names the bar."""


@dataclass(frozen=True)
class RunOptions:
    """How to run it: what to report, whether to resume."""

    knn_probe: Callable[[nn.Module], float] | None = None
    """Scores an EMA backbone by kNN top-1 in [0, 1] (final model, and every ``knn_every``
    steps); without it ``knn_top1`` is 0.0 and ``knn_probed`` false."""
    chance: float = 0.1
    """Chance-level accuracy of the probe, copied into the summary."""
    resume: bool = True
    """Continue from ``out_dir/checkpoint.pt`` when it was written with the same recipe."""
    progress: bool = True
    """tqdm bar (rank 0)."""
    on_step: StepHook | None = None
    """Called as ``on_step(step, record)`` after every optimisation step."""


def adamw_implementation(parallelism: str) -> dict[str, bool]:
    """AdamW's kernel: ``fused`` (one vectorised pass over each parameter, CPU and CUDA) for
    plain tensors; ``foreach`` for FSDP's sharded DTensors. Same update as the per-parameter
    loop up to float rounding (tests/unit/train/test_fast_step.py)."""
    return {"foreach": True} if parallelism == "fsdp" else {"fused": True}


def total_steps(cfg: TrainConfig | DistillConfig, n_images: int, world: int) -> int:
    """Steps of the run: ``epochs`` over each rank's shard in full batches, capped by
    ``max_steps``. ValueError when a rank's shard is less than one batch."""
    steps_per_epoch = math.ceil(n_images / world) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"{n_images} images over {world} process(es) is less than one batch of "
            f"{cfg.batch_size}; lower batch_size"
        )
    full = cfg.epochs * steps_per_epoch
    return min(full, cfg.max_steps) if cfg.max_steps else full


class Trainer:
    """One training run: its parts, its state, one step, the loop, the outputs.

    Checkpoint parts (:meth:`checkpoint`): ``model`` (student + EMA + heads), ``losses``
    (softmax centres), ``optimizer``, ``train_state`` (:class:`TrainState`), ``rng``, ``config``.
    """

    def __init__(self, spec: RunSpec, rt: Runtime, opts: RunOptions) -> None:
        self.spec, self.rt, self.opts, self.cfg = spec, rt, opts, spec.cfg
        cfg, model, device = spec.cfg, spec.model, rt.device
        self.out_dir = Path(spec.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if rt.is_main:  # temporaries of a killed run (this stage holds the run lock)
            for stale in self.out_dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        model.to(device).train()
        n_params = sum(p.numel() for p in model.student.parameters())
        self.parallelism = resolve_parallelism(cfg.distributed, rt.world, n_params)
        # FSDP shards before the optimizer sees the parameters (they become DTensors)
        self.tensors = make_model_state(self.parallelism, model, device, rt.world, rt.is_main)
        patch = model.student.backbone.patch_size
        mc = MultiCropConfig.for_recipe(cfg, spec.image_size, patch)
        self.augment = MultiCropAugmentation(mc, patch)
        self.packed = resolve_packed(cfg.packed, device)

        self.ds = ImageDataset(spec.root, list(spec.paths), spec.image_size, channels=3)
        self.total_steps = total_steps(cfg, len(self.ds), rt.world)
        self.sched = build_schedules(cfg, self.total_steps / cfg.epochs, self.total_steps)
        # collapse checks start after the lr warm-up: at init (layer-scale 1e-5) the teacher's CLS
        # is almost the same for every image, which is not a collapse
        self.grace = max(int(np.argmax(self.sched.lr)), cfg.collapse_patience)
        self.monitor = CollapseMonitor(self.grace, cfg.collapse_patience, rt.all_max)

        self.optimizer = torch.optim.AdamW(
            param_groups(
                model.student, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.patch_embed_lr_mult
            ),
            lr=cfg.lr,
            betas=(0.9, 0.999),
            **adamw_implementation(self.parallelism),
        )
        out_dim = model.student.head_config["out_dim"]
        self.losses = Losses(out_dim, cfg.student_temp, cfg.centering).to(device)
        self.cfg_json = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)

        self.state = TrainState()
        self._window: list[dict[str, float]] = []  # metrics steps not logged at the checkpoint
        self.resumed_from = self._restore() if opts.resume else None
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl", rt.is_main)
        self.metrics.start(self.resumed_from)
        self.metrics.window = self._window
        self.student = self._wrap_student()
        self.clock = Throughput(self.state.wall_s)
        self.bar = progress_bar(
            total=self.total_steps,
            initial=self.state.step,
            enabled=opts.progress and rt.is_main,
            desc=spec.config_json.get("role", "train"),
            dynamic_ncols=True,
        )

    # ------------------------------------------------------------------------- state
    def _restore(self) -> int | None:
        """Load the checkpoint of the same recipe, if any; return the step it was written at."""
        ckpt_path = self.out_dir / CHECKPOINT
        if not ckpt_path.exists():
            return None
        problem = verify_checkpoint(ckpt_path)
        if problem is not None:
            log.warning("%s not resumed from (%s): deleted, starting over", ckpt_path, problem)
            if self.rt.is_main:
                ckpt_path.unlink(missing_ok=True)
                record_path(ckpt_path).unlink(missing_ok=True)
            return None
        train_state = restore_run(
            ckpt_path, self.cfg_json, self.tensors, self.optimizer, self.losses, self.parallelism
        )
        if train_state is None:  # another recipe: start from scratch
            return None
        self.state = TrainState.from_state_dict(train_state)
        self._window = list(train_state.get("metrics_window", []))
        log.info("resumed from %s at step %d", ckpt_path, self.state.step)
        return self.state.step

    def _wrap_student(self) -> nn.Module:
        """The module the step calls: the student, or its DDP wrapper."""
        model, device = self.spec.model, self.rt.device
        if self.parallelism != "ddp":
            return model.student
        student = DistributedDataParallel(
            model.student, device_ids=[device.index] if device.type == "cuda" else None
        )
        if self.resumed_from is None:  # EMA starts as the (broadcast) student on every rank
            model.ema.load_state_dict(model.student.state_dict())
        return student

    def checkpoint(self) -> None:
        """Write ``checkpoint.pt`` (collective under FSDP: rank 0 gets the full tensors)."""
        model_sd = self.tensors.full_model_state()
        optim_sd = self.tensors.full_optimizer_state(self.optimizer)
        if self.rt.is_main:
            save_checkpoint(
                self.out_dir / CHECKPOINT,
                {
                    "model": model_sd,
                    "losses": self.losses.state_dict(),
                    "optimizer": optim_sd,
                    "optimizer_format": self.tensors.optimizer_format,
                    # with the steps of the metrics line being averaged: the resumed run
                    # writes the same line as an uninterrupted one
                    "train_state": {
                        **self.state.state_dict(),
                        "metrics_window": list(self.metrics.window),
                    },
                    "rng": get_rng_state(),
                    "config": self.cfg_json,
                },
            )
        self.rt.barrier()

    # ------------------------------------------------------------------------- step
    def step(self, images: Tensor) -> dict[str, float]:
        """One optimisation step on ``images`` (B, C, H, W); returns the step's record.

        Its randomness (augmentation, masks, drop-path) is seeded from (seed, rank, step) only,
        so a resumed run repeats it exactly.
        """
        cfg, rt, st = self.cfg, self.rt, self.state
        t0 = time.perf_counter()
        step = st.step
        g = torch.Generator().manual_seed(step_seed(cfg.seed, rt.rank, step))
        torch.manual_seed(step_seed(cfg.seed, rt.rank, step) ^ 0x5EED)  # drop-path
        s = self.sched.at(step)
        m = train_step(
            self.spec.model,
            self.student,
            self.optimizer,
            self.losses,
            images.to(rt.device, non_blocking=True),
            self.augment,
            g,
            s,
            cfg,
            self.packed,
        )
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)
        dt = time.perf_counter() - t0
        n_img = images.shape[0] * rt.world
        st.step, st.images = step + 1, st.images + n_img
        if step > 0 or self.resumed_from is not None:  # first step pays one-off costs
            self.clock.add(n_img, dt)
        self.monitor.update(step, m)
        rec = {
            "step": step + 1,
            "epoch": st.epoch,
            **m,
            "lr": s["lr"],
            "wd": s["wd"],
            "momentum": s["momentum"],
            "teacher_temp": s["teacher_temp"],
            "images_per_s": n_img / dt,
        }
        st.last = rec
        st.recent_losses = [*st.recent_losses, m["loss"]][-cfg.log_every :]
        return rec

    # ------------------------------------------------------------------------- loop
    def train(self) -> None:
        """Epochs until ``total_steps``, then the final checkpoint."""
        st = self.state
        while st.step < self.total_steps and st.epoch < self.cfg.epochs:
            if self._epoch():
                break  # total_steps reached inside the epoch
            st.epoch, st.batch = st.epoch + 1, 0
        self.bar.close()
        st.wall_s = self.clock.wall_s()
        self.checkpoint()

    def loader(self) -> DataLoader:
        """Batches ``(images, indices, n_bad)`` of epoch ``state.epoch`` from ``state.batch``
        on (this rank's shard)."""
        cfg, rt, st = self.cfg, self.rt, self.state
        sampler = ResumableSampler(self.ds, rt.world, rt.rank, cfg.seed, st.batch * cfg.batch_size)
        sampler.set_epoch(st.epoch)
        return DataLoader(
            self.ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate_skip_bad,
            drop_last=True,
            pin_memory=rt.device.type == "cuda",
        )

    def _epoch(self) -> bool:
        """The rest of epoch ``state.epoch`` from batch ``state.batch``; True when the run
        reached ``total_steps`` before the epoch's end."""
        rt, st = self.rt, self.state
        for bi, (images, _idx, n_bad) in enumerate(self.loader(), start=st.batch):
            if st.step >= self.total_steps:
                return True
            st.n_bad += n_bad
            st.batch = bi + 1
            if rt.all_max([-float(images.shape[0])])[0] > -2:  # some rank has < 2 good images
                continue
            self._after_step(self.step(images))
        return False

    def _after_step(self, rec: dict[str, float]) -> None:
        """The cadences: progress, metrics line, kNN curve, hook, checkpoint."""
        cfg, st, probe = self.cfg, self.state, self.opts.knn_probe
        last = st.step == self.total_steps
        self.bar.set_postfix(
            loss=f"{rec['loss']:.3f}", img_s=f"{rec['images_per_s']:.0f}", refresh=False
        )
        self.bar.update(1)
        self.metrics.add(rec, st.step, st.epoch, st.step % cfg.log_every == 0 or last)
        probe_due = cfg.knn_every and st.step % cfg.knn_every == 0
        if probe is not None and probe_due and not last:  # the final probe is in the summary
            self._probe_curve(probe)
        if self.opts.on_step is not None:
            self.opts.on_step(st.step, rec)
        failpoint("train.step")
        if st.step % cfg.checkpoint_every == 0 and not last:
            st.wall_s = self.clock.wall_s()
            self.checkpoint()
            failpoint("train.after_checkpoint")

    def _probe_curve(self, probe: Callable[[nn.Module], float]) -> None:
        """A point of the kNN curve; the probe draws no random numbers, so resume stays exact."""
        net = self.tensors.gathered_ema()  # collective under FSDP
        if self.rt.is_main:
            acc = float(probe(net.backbone))
            self.metrics.knn(self.state.step, acc)
            self.bar.write(f"step {self.state.step}: kNN top-1 {acc:.3f}")

    # ------------------------------------------------------------------------- outputs
    def finish(self) -> dict[str, Any]:
        """Export the EMA model and write the summary (rank 0).

        Returns:
            The summary (rank 0); other ranks get ``steps``, ``weights_sha256``, ``rank``.
        """
        ema = self.tensors.gathered_ema()  # FSDP: the unsharded copy on rank 0, None elsewhere
        sha = weights_sha256(ema.backbone) if ema is not None else ""
        summary = self._write_outputs(ema, sha) if self.rt.is_main else {}
        self.rt.barrier()
        return summary or {
            "steps": int(self.state.step),
            "weights_sha256": sha,
            "rank": self.rt.rank,
        }

    def _write_outputs(self, ema: SSLNet, sha: str) -> dict[str, Any]:
        """Final checks and probe of ``ema``, then its files and ``summary.json``."""
        st, out, probe = self.state, self.out_dir, self.opts.knn_probe
        # the unsharded FSDP copy lives on the CPU; everything else on the training device
        feature_std = eval_feature_std(ema.backbone, self.ds, next(ema.parameters()).device)
        if st.step > self.grace and feature_std < 1e-6:
            raise CollapseError(
                f"collapse: final teacher features are constant (std {feature_std:.2e})"
            )
        knn = float(probe(ema.backbone.eval())) if probe is not None else None
        ema.backbone.train(False)
        save_backbone(ema.backbone, out / MODEL)
        failpoint("train.mid_outputs")
        save_head(ema, out / HEAD)
        write_json(
            out / "config.json",
            {
                **self.spec.config_json,
                "vit": ema.backbone.config.to_dict(),
                "head": ema.head_config,
            },
        )
        last, nan = st.last, float("nan")
        summary = {
            "final_loss": float(np.mean(st.recent_losses or [nan])),
            "last_step_loss": float(last.get("loss", nan)),
            "feature_std": feature_std,
            "knn_top1": knn if knn is not None else 0.0,
            "knn_probed": knn is not None,
            "chance": float(self.opts.chance),
            "steps": int(st.step),
            "epochs": self.cfg.epochs,
            "images_seen": int(st.images),
            "images_per_s": self.clock.images_per_s(),
            "wall_s": float(st.wall_s),
            "n_bad_files": int(st.n_bad),
            # absent when the target has no prototypes (feature distillation): no NaN in JSON
            **{k: float(last[k]) for k in ENTROPY_KEYS if k in last},
            "resumed_from_step": self.resumed_from,
            "packed": self.packed,
            "precision": resolve_precision(self.cfg.precision, self.rt.device),
            "device": str(self.rt.device),
            "world_size": self.rt.world,
            "parallelism": self.parallelism,
            "weights_sha256": sha,
        }
        write_json(out / "summary.json", summary)
        return summary


def fit(spec: RunSpec, rt: Runtime, opts: RunOptions | None = None) -> dict[str, Any]:
    """Train ``spec.model.student`` (targets from ``spec.model.target``), export its EMA and
    write ``spec.out_dir`` (files: module docstring); resume from its checkpoint when allowed.

    Returns:
        The summary dict (rank 0); other ranks get ``steps``, ``weights_sha256``, ``rank``.

    Raises:
        CollapseError: Non-finite loss, or a constant / degenerate teacher for
            ``collapse_patience`` steps after the warm-up.
        ValueError: Fewer images per process than one batch.
    """
    trainer = Trainer(spec, rt, opts or RunOptions())
    trainer.train()
    return trainer.finish()
