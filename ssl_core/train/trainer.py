"""Teacher pretraining loop (DINOv2 recipe: DINO + iBOT + KoLeo, EMA teacher, multi-crop).

:func:`train_teacher` trains one backbone and writes into ``out_dir``:

* ``model.safetensors`` — EMA teacher backbone, official DINOv2 layout (``load_backbone``);
* ``head.safetensors`` — EMA DINO (+ iBOT) head, head settings in the metadata (distillation
  targets);
* ``config.json`` — ViT config, head config, the train config;
* ``metrics.jsonl`` — one line per ``log_every`` steps (losses, lr, wd, momentum, teacher temp,
  teacher entropies, feature std, images/s);
* ``summary.json`` — ``final_loss``, ``feature_std``, ``knn_top1``, ``chance``, ``steps``,
  ``images_per_s``, ``wall_s`` and more;
* ``checkpoint.pt`` — every ``checkpoint_every`` steps and at the end (resume is bit-exact on CPU).

Single process, or under ``torchrun`` (``RANK``/``WORLD_SIZE`` set): DDP over the student,
gloo on CPU, nccl on CUDA, each rank reads its ``DistributedSampler`` shard; rank 0 writes.

Randomness: init from ``seed``; data order from (seed, epoch) (``DistributedSampler``);
augmentation, masks and drop-path from a generator seeded with (seed, rank, step). So a run
resumed from a checkpoint at step n continues exactly as the uninterrupted run.

CPU measurements (2 cores shared with other jobs, load ~3.5, ``OMP_WAIT_POLICY=PASSIVE``; tiny
preset at 32 px, 2 globals + 2 locals of 16 px, batch 32): ~16 img/s for teacher training
(~190 s per epoch of 3000 images), ~30 img/s for distillation into ``tiny_student``. Packed and
naive multi-crop forwards measured equal within noise (15.7 vs 15.7 img/s); ``packed: auto``
stays naive on CPU because a packed row's attention grows as (sum of crop lengths)^2 with more
local crops, and is packed on CUDA (fewer kernel launches). Without ``OMP_WAIT_POLICY=PASSIVE``
two spinning OpenMP threads on a busy machine ran at 3.4 img/s (1 thread: 14 img/s).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ssl_core.config import DistillConfig, TrainConfig
from ssl_core.data.augment import MultiCropAugmentation, MultiCropConfig
from ssl_core.data.dataset import ImageDataset, collate_skip_bad
from ssl_core.data.normalize import normalize
from ssl_core.models.official import save_backbone
from ssl_core.models.param_groups import param_groups
from ssl_core.models.presets import build_vit
from ssl_core.train.checkpoint import (
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from ssl_core.train.schedules import build_schedules
from ssl_core.train.ssl_model import SSLModel, SSLNet, make_head_config
from ssl_core.train.step import Losses, resolve_packed, train_step
from ssl_core.utils.atomic import atomic_path, write_json

__all__ = ["CollapseError", "train_teacher"]

log = logging.getLogger("sslops.train")

CHECKPOINT = "checkpoint.pt"
MODEL = "model.safetensors"
HEAD = "head.safetensors"
HEAD_METADATA_KEY = "head_config"
StepHook = Callable[[int, dict[str, float]], None]


class CollapseError(RuntimeError):
    """Training diverged (non-finite loss) or collapsed (constant or degenerate teacher)."""


# ----------------------------------------------------------------------------- runtime
@dataclass
class Runtime:
    """Process-level setup: device, distributed rank/world, threads."""

    device: torch.device
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, num_threads: int | None) -> Runtime:
        """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun); init the process group."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        if torch.cuda.is_available():
            device = torch.device("cuda", local % torch.cuda.device_count())
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            torch.set_num_threads(num_threads or max(1, cores // world))
        owns = False
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            owns = True
        return cls(device, rank, world, owns)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def all_max(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the per-step generator (augmentation, masks, drop-path)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (order from seed + epoch) that can start mid-epoch."""

    def __init__(
        self, dataset: ImageDataset, world: int, rank: int, seed: int, start: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


# ----------------------------------------------------------------------------- io
def weights_sha256(module: nn.Module) -> str:
    """Hash of a module's tensors (key order), for cross-rank / cross-run equality checks."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_head(net: SSLNet, path: Path) -> Path:
    """Write the head tensors with their settings as metadata (atomically)."""
    meta = {"format": "pt", HEAD_METADATA_KEY: json.dumps(net.head_config)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.heads_state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _rewrite_metrics(path: Path, upto_step: int) -> None:
    """Drop metric lines past the checkpoint step (they will be produced again)."""
    if not path.exists():
        return
    keep = [
        ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= upto_step
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))


@torch.no_grad()
def eval_feature_std(
    backbone: nn.Module, ds: ImageDataset, device: torch.device, n: int = 256
) -> float:
    """Std over a fixed batch (first ``n`` readable images) of l2-normalised CLS, per dim averaged."""
    items = [it for it in (ds[i] for i in range(min(len(ds), n))) if it is not None]
    if len(items) < 2:
        return float("nan")
    x = normalize(torch.stack([t for t, _ in items]).to(device))
    was = backbone.training
    backbone.eval()
    cls = backbone(x).float()  # (n, D)
    backbone.train(was)
    return float(F.normalize(cls, dim=-1).std(dim=0).mean())


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
    patch = model.student.backbone.patch_size
    mc = MultiCropConfig.scaled_for(image_size, patch, n_local=cfg.n_local_crops)
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
        ck = load_checkpoint(ckpt_path)
        if ck["config"] != cfg_json:
            log.warning("%s was written with other parameters: starting from scratch", ckpt_path)
        else:
            missing, unexpected = model.load_state_dict(ck["model"], strict=False)
            if unexpected or any(not k.startswith("teacher.") for k in missing):
                raise ValueError(
                    f"{ckpt_path}: model keys do not match ({missing[:3]}, {unexpected[:3]})"
                )
            losses.load_state_dict(ck["losses"])
            optimizer.load_state_dict(ck["optimizer"])
            set_rng_state(ck["rng"])
            state.update(ck["train_state"])
            resumed_from = state["step"]
            log.info("resumed from %s at step %d", ckpt_path, resumed_from)
    metrics_path = out_dir / "metrics.jsonl"
    if rt.is_main:
        if resumed_from is None:
            metrics_path.unlink(missing_ok=True)
        else:
            _rewrite_metrics(metrics_path, resumed_from)

    student: nn.Module = model.student
    if rt.world > 1:
        student = DistributedDataParallel(
            model.student, device_ids=[device.index] if device.type == "cuda" else None
        )
        if resumed_from is None:  # EMA starts as the (broadcast) student on every rank
            model.ema.load_state_dict(model.student.state_dict())

    def checkpoint() -> None:
        if rt.is_main:
            save_checkpoint(
                ckpt_path,
                {
                    "model": model.trainable_state_dict(),
                    "losses": losses.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "train_state": dict(state),
                    "rng": get_rng_state(),
                    "config": cfg_json,
                },
            )
        rt.barrier()

    bar = tqdm(
        total=total_steps,
        initial=state["step"],
        disable=not (progress and rt.is_main),
        desc=config_json.get("role", "train"),
        dynamic_ncols=True,
    )
    t_start = time.perf_counter()
    wall_before = state["wall_s"]
    timed_images, timed_s = 0, 0.0
    window: list[dict[str, float]] = []
    bad_run = 0
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

            # collapse detection (flags agreed across ranks)
            nonfinite = not math.isfinite(m["loss"])
            degenerate = step >= grace and (
                m["feature_std"] < 1e-6
                or m["teacher_entropy"] > 0.98 * m["log_k"]
                or m["teacher_marginal_entropy"] < 0.02 * m["log_k"]
            )
            nonfinite_any, degenerate_any = rt.all_max([float(nonfinite), float(degenerate)])
            if nonfinite_any:
                raise CollapseError(f"non-finite loss at step {step}: {m}")
            bad_run = bad_run + 1 if degenerate_any else 0
            if bad_run >= cfg.collapse_patience:
                raise CollapseError(
                    f"collapse: teacher degenerate for {bad_run} consecutive steps (feature std "
                    f"{m['feature_std']:.2e}, entropy {m['teacher_entropy']:.3f} / log K "
                    f"{m['log_k']:.3f}, marginal entropy {m['teacher_marginal_entropy']:.3f})"
                )

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
            bar.update(1)
            bar.set_postfix(loss=f"{m['loss']:.3f}", img_s=f"{n_img / dt:.0f}")
            if rt.is_main and (state["step"] % cfg.log_every == 0 or state["step"] == total_steps):
                mean = {k: float(np.mean([r[k] for r in window])) for k in rec if k != "step"}
                with metrics_path.open("a") as f:
                    f.write(json.dumps({**mean, "step": state["step"], "epoch": epoch}) + "\n")
                window = []
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

    ema = model.ema
    sha = weights_sha256(ema.backbone)
    summary: dict[str, Any] = {}
    if rt.is_main:
        feature_std = eval_feature_std(ema.backbone, ds, device)
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
            "weights_sha256": sha,
        }
        write_json(out_dir / "summary.json", summary)
    rt.barrier()
    return summary or {"steps": int(state["step"]), "weights_sha256": sha, "rank": rt.rank}


# ----------------------------------------------------------------------------- entry
def build_teacher_model(cfg: TrainConfig) -> SSLModel:
    """Student ViT (preset at ``image_size``, registers, drop-path) + heads, and its EMA."""
    torch.manual_seed(cfg.seed)
    backbone = build_vit(
        cfg.preset,
        img_size=cfg.image_size,
        num_register_tokens=cfg.num_register_tokens,
        drop_path_rate=cfg.drop_path_rate,
        layerscale_init=cfg.layerscale_init,
    )
    head = make_head_config(
        cfg.out_dim,
        cfg.head_hidden_dim,
        cfg.head_bottleneck_dim,
        cfg.head_nlayers,
        cfg.separate_ibot_head,
    )
    return SSLModel(SSLNet(backbone, head))


def train_teacher(
    cfg: TrainConfig,
    root: Path,
    paths: list[str],
    out_dir: Path,
    knn_probe: Callable[[nn.Module], float] | None = None,
    chance: float = 0.1,
    resume: bool = True,
    progress: bool = True,
    on_step: StepHook | None = None,
) -> dict[str, Any]:
    """Pretrain a teacher on ``paths`` (relative to ``root``) and write ``out_dir``.

    Args:
        cfg: Recipe (``params.yaml`` ``train:``).
        root: Pool root the paths are relative to.
        paths: Curated image paths (``file.parquet::row`` entries allowed).
        out_dir: Output folder (see module docstring for the files).
        knn_probe: Called with the final EMA backbone (eval mode), returns kNN top-1 in
            [0, 1]; without it ``knn_top1`` is 0.0 and ``knn_probed`` false.
        chance: Chance-level accuracy of the probe, copied into the summary.
        resume: Continue from ``out_dir/checkpoint.pt`` when it was written with the same cfg.
        progress: tqdm bar (rank 0).
        on_step: Called as ``on_step(step, metrics)`` after every optimisation step.

    Returns:
        The summary dict (rank 0); other ranks get ``steps``, ``weights_sha256``, ``rank``.

    Raises:
        CollapseError: Non-finite loss, or a constant / degenerate teacher for
            ``collapse_patience`` steps after the warm-up.
    """
    rt = Runtime.start(cfg.num_threads)
    try:
        model = build_teacher_model(cfg)
        config_json = {"role": "teacher", "train": cfg.model_dump(mode="json")}
        return fit(
            cfg,
            rt,
            model,
            cfg.image_size,
            Path(root),
            list(paths),
            Path(out_dir),
            config_json,
            knn_probe,
            chance,
            resume,
            progress,
            on_step,
        )
    finally:
        rt.close()
