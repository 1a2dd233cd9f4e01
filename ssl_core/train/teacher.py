"""Teacher pretraining entry: build the student + EMA teacher from a :class:`TrainConfig` and
run the shared loop (:func:`ssl_core.train.trainer.fit`); the ``teacher`` stage calls
:func:`train_teacher`. Output files: :mod:`ssl_core.train.trainer`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_core.config import TrainConfig
from ssl_core.models.presets import build_backbone
from ssl_core.train.runtime import Runtime
from ssl_core.train.ssl_model import SSLModel, SSLNet, make_head_config
from ssl_core.train.trainer import RunOptions, RunSpec, StepHook, fit

__all__ = ["build_teacher_model", "train_teacher"]


def build_teacher_model(cfg: TrainConfig) -> SSLModel:
    """Student backbone (ViT or XCiT preset at ``image_size``, registers, drop-path) + heads, and
    its EMA."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(
        cfg.preset,
        img_size=cfg.image_size,
        **({"patch_size": cfg.patch_size} if cfg.patch_size else {}),
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
        cfg.head_use_bn,
        cfg.head_norm_last_layer,
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
        spec = RunSpec(
            cfg=cfg,
            model=model,
            image_size=cfg.image_size,
            root=Path(root),
            paths=list(paths),
            out_dir=Path(out_dir),
            config_json=config_json,
        )
        opts = RunOptions(
            knn_probe=knn_probe, chance=chance, resume=resume, progress=progress, on_step=on_step
        )
        return fit(spec, rt, opts)
    finally:
        rt.close()
