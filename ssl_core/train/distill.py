"""Distillation of a small student from a frozen teacher (DINOv2, Oquab et al. 2023, §5 "Model
distillation"; upstream code not released).

The teacher (``teacher_dir/model.safetensors`` + ``head.safetensors`` written by
:func:`ssl_core.train.teacher.train_teacher`) is frozen: no EMA, no masking, no drop-path. The
student (a fresh backbone + its own head with the teacher's K prototypes) is trained with the
same losses on the teacher's outputs, with iBOT on both global crops (``mask_probability`` 1 by
default). The EMA of the student is the final model; it is written in the same files as the
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
from ssl_core.models.official import load_backbone, read_safetensors, state_dict_differences
from ssl_core.models.presets import Backbone, BackboneConfig, build_from_config, get_config
from ssl_core.train.outputs import HEAD, HEAD_METADATA_KEY, MODEL
from ssl_core.train.runtime import Runtime
from ssl_core.train.ssl_model import SSLModel, SSLNet, make_head_config
from ssl_core.train.trainer import RunOptions, RunSpec, StepHook, fit

__all__ = ["distill_student", "load_teacher", "student_config"]


def student_config(name: str, **overrides: Any) -> BackboneConfig:
    """Config of a student preset from :mod:`ssl_core.models.presets` (ValueError lists names);
    ``xcit_*`` presets give an XCiT student, the others a ViT, whatever the teacher is."""
    return get_config(name, **overrides)


def load_teacher(teacher_dir: Path) -> tuple[SSLNet, dict[str, Any]]:
    """Frozen teacher backbone + head from a ``train_teacher`` output folder.

    Returns:
        ``(net, config_json)``: the network (eval mode) and the folder's ``config.json``
        (empty dict when absent).

    Raises:
        FileNotFoundError: ``model.safetensors`` or ``head.safetensors`` is missing (a bare
            backbone, e.g. an official DINOv2 release, has no prototype head to distil from).
    """
    teacher_dir = Path(teacher_dir)
    model_path, head_path = teacher_dir / MODEL, teacher_dir / HEAD
    if not model_path.is_file():
        raise FileNotFoundError(f"teacher backbone not found: {model_path}")
    if not head_path.is_file():
        raise FileNotFoundError(
            f"teacher head not found: {head_path}. Distillation matches the teacher's prototype "
            "outputs, so it needs the DINO head written by train_teacher (head.safetensors)."
        )
    backbone: Backbone = load_backbone(model_path)
    head_sd, meta = read_safetensors(head_path)  # CheckpointError when truncated / corrupt
    if HEAD_METADATA_KEY not in meta:
        raise ValueError(f"{head_path}: no '{HEAD_METADATA_KEY}' metadata")
    net = SSLNet(backbone, json.loads(meta[HEAD_METADATA_KEY]))
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith("backbone.")}
    diffs = state_dict_differences(expected, head_sd)
    if diffs:
        raise ValueError(f"{head_path}: head does not fit its backbone:\n  " + "\n  ".join(diffs))
    net.load_state_dict(head_sd, strict=False)
    cfg_path = teacher_dir / "config.json"
    config_json = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    return net.eval(), config_json


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
        teacher_dir: Output folder of ``train_teacher`` (model + head safetensors).
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
        FileNotFoundError: Teacher backbone or head missing.
        ValueError: Unknown preset, or the teacher's patch size does not divide the image size.
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
        t_head = teacher.head_config
        head = make_head_config(
            t_head["out_dim"],
            cfg.head_hidden_dim,
            cfg.head_bottleneck_dim,
            cfg.head_nlayers,
            t_head["separate_ibot_head"],
        )
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
