"""Distillation: a few steps from a tiny trained teacher; files written, teacher untouched."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_core.config import DistillConfig
from ssl_core.models.official import load_backbone
from ssl_core.train.distill import distill_student, student_config
from ssl_core.train.teacher import train_teacher
from ssl_core.utils.hashing import sha256_file
from tests.unit.train.conftest import OUTPUT_FILES


@pytest.fixture(scope="module")
def teacher_dir(image_pool, tmp_path_factory, tiny_train_cfg):
    out = tmp_path_factory.mktemp("teacher")
    root, paths = image_pool
    train_teacher(tiny_train_cfg(max_steps=2), root, paths, out, progress=False)
    return out


def _cfg(**kw) -> DistillConfig:
    base = dict(
        epochs=1,
        batch_size=16,
        max_steps=3,
        n_local_crops=2,
        num_register_tokens=0,
        head_hidden_dim=32,
        head_bottleneck_dim=16,
        log_every=1,
        num_threads=1,
    )
    return DistillConfig(**{**base, **kw})


def test_distill_writes_student_and_keeps_teacher(image_pool, teacher_dir, tmp_path):
    root, paths = image_pool
    before = {p.name: sha256_file(p) for p in teacher_dir.iterdir() if p.is_file()}
    summary = distill_student(
        _cfg(),
        "tiny_student",
        teacher_dir,
        root,
        paths,
        tmp_path,
        knn_probe=lambda m: 0.3,
        chance=0.1,
        progress=False,
    )
    after = {p.name: sha256_file(p) for p in teacher_dir.iterdir() if p.is_file()}
    assert before == after
    for name in OUTPUT_FILES:
        assert (tmp_path / name).is_file(), name
    assert summary["steps"] == 3 and math.isfinite(summary["final_loss"])
    assert summary["knn_top1"] == 0.3
    student = load_backbone(tmp_path / "model.safetensors")
    assert student.embed_dim == 128 and len(student.blocks) == 4
    assert student.config.img_size == 16  # the teacher's training size
    assert student(torch.rand(2, 3, 16, 16)).shape == (2, 128)


def test_distill_needs_teacher_head(image_pool, teacher_dir, tmp_path):
    root, paths = image_pool
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes((teacher_dir / "model.safetensors").read_bytes())
    with pytest.raises(FileNotFoundError, match="head.safetensors"):
        distill_student(_cfg(), "tiny_student", bare, root, paths, tmp_path / "o", progress=False)


def test_student_presets():
    assert student_config("tiny_student").embed_dim == 128
    assert student_config("tiny").embed_dim == 192
    with pytest.raises(ValueError, match="unknown backbone preset"):
        student_config("nope")


def test_student_takes_the_teachers_patch_size(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    teacher = tmp_path / "teacher_p8"
    train_teacher(tiny_train_cfg(max_steps=1, patch_size=8), root, paths, teacher, progress=False)
    assert load_backbone(teacher / "model.safetensors").patch_size == 8
    distill_student(_cfg(max_steps=1), "tiny_student", teacher, root, paths, tmp_path / "s",
                    progress=False)  # fmt: skip
    student = load_backbone(tmp_path / "s" / "model.safetensors")
    assert student.patch_size == 8 and student.embed_dim == 128  # tiny_student's width, p8
