"""Distillation of a small student from a frozen teacher (DINOv2, Oquab et al. 2023, §5 "Model
distillation"; upstream code not released).

The teacher (``teacher_dir/model.safetensors`` + ``head.safetensors`` written by
:func:`ssl_core.train.teacher.train_teacher`, or any official-layout DINOv2 backbone) is frozen:
no EMA, no masking, no drop-path. What the student (a fresh backbone + its own head) learns from
it is ``distill.target``: ``prototypes``, the same losses on the teacher head's outputs with iBOT
on both global crops (``mask_probability`` 1 by default); ``features``, a cosine regression of
the teacher's CLS and patch tokens of the same crops through a linear projector
(:func:`ssl_core.train.objectives.feature_loss`; the only target a bare backbone offers);
``both``, the sum. The EMA of the student is the final model; it is written in the same files as the
teacher (``model.safetensors``, ``head.safetensors``, ``config.json``, ``metrics.jsonl``,
``summary.json``, ``checkpoint.pt``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_core.config import DistillConfig
from ssl_core.models.official import (
    load_backbone,
    read_safetensors,
    state_dict_differences,
    weights_file,
)
from ssl_core.models.presets import (
    Backbone,
    BackboneConfig,
    build_from_config,
    get_config,
    pinned_fields,
)
from ssl_core.train.outputs import HEAD, HEAD_METADATA_KEY
from ssl_core.train.runtime import Runtime
from ssl_core.train.ssl_model import SSLModel, SSLNet, make_head_config
from ssl_core.train.trainer import RunOptions, RunSpec, StepHook, fit

__all__ = ["distill_student", "load_teacher", "student_config", "student_head"]


def student_config(name: str, **overrides: Any) -> BackboneConfig:
    """Config of a student preset from :mod:`ssl_core.models.presets` (ValueError lists names);
    ``xcit_*`` presets give an XCiT student, the others a ViT, whatever the teacher is. Fields a
    preset pins (``tiny_student_noreg``: no registers) win over the recipe's ``overrides``."""
    return get_config(name, **{**overrides, **pinned_fields(name)})


def load_teacher(source: Path) -> tuple[SSLNet, dict[str, Any]]:
    """Frozen teacher from a ``train_teacher`` output folder or an official-layout backbone.

    Args:
        source: A folder with ``model.safetensors`` (+ ``head.safetensors`` when the teacher
            has a prototype head), or a backbone file (``.safetensors`` / ``.pth`` in the
            official DINOv2 layout, e.g. a released ``dinov2_vits14_reg4_pretrain.pth``).

    Returns:
        ``(net, config_json)``: the network (eval mode; ``net.has_prototypes`` False for a bare
        backbone) and the folder's ``config.json`` (empty dict when absent).

    Raises:
        FileNotFoundError: No backbone at ``source``.
        CheckpointError: A weights file is truncated, corrupt or of another architecture.
    """
    source = Path(source)
    model_path = weights_file(source)
    if not model_path.is_file():
        raise FileNotFoundError(
            f"teacher backbone not found: {model_path} (distill.teacher: a train_teacher folder "
            "or an official-layout .safetensors / .pth file)"
        )
    backbone: Backbone = load_backbone(model_path)
    head_path = source / HEAD
    if not (source.is_dir() and head_path.is_file()):
        return SSLNet(backbone, make_head_config(0, 0, 0)).eval(), {}
    head_sd, meta = read_safetensors(head_path)  # CheckpointError when truncated / corrupt
    if HEAD_METADATA_KEY not in meta:
        raise ValueError(f"{head_path}: no '{HEAD_METADATA_KEY}' metadata")
    net = SSLNet(backbone, json.loads(meta[HEAD_METADATA_KEY]))
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith("backbone.")}
    diffs = state_dict_differences(expected, head_sd)
    if diffs:
        raise ValueError(f"{head_path}: head does not fit its backbone:\n  " + "\n  ".join(diffs))
    net.load_state_dict(head_sd, strict=False)
    cfg_path = source / "config.json"
    config_json = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    return net.eval(), config_json


def student_head(cfg: DistillConfig, teacher: SSLNet, source: Path) -> dict[str, Any]:
    """The student's head settings for ``cfg.target``: the teacher's K prototypes (targets
    prototypes / both) and a projector to the teacher's width (features / both).

    Raises:
        ValueError: The target needs prototypes and the teacher has none (a bare backbone).
    """
    wants_prototypes = cfg.target in ("prototypes", "both")
    if wants_prototypes and not teacher.has_prototypes:
        raise ValueError(
            f"distill.target = {cfg.target}: the teacher {source} is a bare backbone (no "
            "head.safetensors with prototypes, e.g. an official DINOv2 release); set "
            "distill.target: features to distil its CLS and patch tokens instead"
        )
    t_head = teacher.head_config
    return make_head_config(
        t_head["out_dim"] if wants_prototypes else 0,
        cfg.head_hidden_dim,
        cfg.head_bottleneck_dim,
        cfg.head_nlayers,
        bool(t_head.get("separate_ibot_head", False)) and wants_prototypes,
        feature_dim=teacher.backbone.embed_dim if cfg.target != "prototypes" else None,
    )


def distill_student(
    cfg: DistillConfig,
    student_preset: str,
    teacher_dir: Path,
    root: Path,
    paths: list[str],
    out_dir: Path,
    knn_probe: Callable[[nn.Module], float] | None = None,
    chance: float = 0.1,
    resume: bool = True,
    progress: bool = True,
    on_step: StepHook | None = None,
) -> dict[str, Any]:
    """Distil ``student_preset`` from the teacher in ``teacher_dir``; write ``out_dir``.

    Args:
        cfg: Recipe (``params.yaml`` ``distill:``).
        student_preset: Backbone preset of the student (see :func:`student_config`).
        teacher_dir: Output folder of ``train_teacher`` (model + head safetensors), or an
            official-layout backbone file (``cfg.target`` features only; :func:`load_teacher`).
        root: Pool root the paths are relative to.
        paths: Curated image paths.
        out_dir: Output folder (same files as the teacher's).
        knn_probe: Called with the final EMA student backbone; kNN top-1 in [0, 1].
        chance: Chance-level accuracy, copied into the summary.
        resume: Continue from ``out_dir/checkpoint.pt`` written with the same cfg.
        progress: tqdm bar (rank 0).
        on_step: Called as ``on_step(step, metrics)`` after every step.

    Returns:
        The summary dict (rank 0).

    Raises:
        FileNotFoundError: Teacher backbone missing.
        ValueError: Unknown preset, the teacher's patch size does not divide the image size,
            or ``cfg.target`` needs prototypes the teacher does not have.
    """
    rt = Runtime.start(cfg.num_threads)
    try:
        teacher, teacher_json = load_teacher(Path(teacher_dir))
        image_size = (
            cfg.image_size
            or teacher_json.get("train", {}).get("image_size")
            or teacher.backbone.config.img_size
        )
        torch.manual_seed(cfg.seed)
        s_cfg = student_config(
            student_preset,
            img_size=image_size,
            num_register_tokens=cfg.num_register_tokens,
            drop_path_rate=cfg.drop_path_rate,
            layerscale_init=cfg.layerscale_init,
            # iBOT compares patch tokens position by position: the student takes the teacher's
            # patch size (as DINOv2 distils g/14 into S/B/L/14)
            patch_size=teacher.backbone.patch_size,
        )
        head = student_head(cfg, teacher, Path(teacher_dir))
        model = SSLModel(SSLNet(build_from_config(s_cfg), head), teacher=teacher)
        config_json = {
            "role": "student",
            "student_preset": student_preset,
            "teacher_dir": str(teacher_dir),
            "teacher_vit": teacher.backbone.config.to_dict(),
            "distill": cfg.model_dump(mode="json"),
        }
        spec = RunSpec(
            cfg=cfg,
            model=model,
            image_size=int(image_size),
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
