"""Distillation: a few steps from a tiny trained teacher; files written, teacher untouched."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ssl_core.config import DistillConfig
from ssl_core.models.official import export_state_dict, load_backbone
from ssl_core.models.presets import build_from_config, get_config
from ssl_core.train.distill import distill_student, student_config
from ssl_core.train.objectives import feature_loss
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


def test_prototype_target_needs_a_teacher_head(image_pool, teacher_dir, tmp_path):
    root, paths = image_pool
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes((teacher_dir / "model.safetensors").read_bytes())
    for target in ("prototypes", "both"):
        with pytest.raises(ValueError, match="bare backbone.*distill.target: features"):
            distill_student(_cfg(target=target), "tiny_student", bare, root, paths,
                            tmp_path / "o", progress=False)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="teacher backbone not found"):
        distill_student(_cfg(target="features"), "tiny_student", tmp_path / "none", root,
                        paths, tmp_path / "o", progress=False)  # fmt: skip


def test_distill_from_an_official_layout_checkpoint(image_pool, tmp_path):
    """A .pth in the official DINOv2 layout (random weights, registers, made here) is a
    teacher for the features target: the student trains end to end and is exported."""
    root, paths = image_pool
    torch.manual_seed(0)
    official = build_from_config(get_config("tiny", img_size=16, num_register_tokens=4))
    ckpt = tmp_path / "dinov2_tiny_reg4.pth"
    torch.save(export_state_dict(official), ckpt)
    out = tmp_path / "student"
    summary = distill_student(_cfg(target="features"), "tiny_student", ckpt, root, paths, out,
                              progress=False)  # fmt: skip
    assert summary["steps"] == 3 and math.isfinite(summary["final_loss"])
    assert all(
        v is None or not isinstance(v, float) or math.isfinite(v) for v in summary.values()
    ), summary  # no NaN entropies when the teacher has no prototypes
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["feature_loss"] > 0 and "teacher_entropy" not in r for r in rows)
    student = load_backbone(out / "model.safetensors")
    assert student.embed_dim == 128 and student.config.img_size == 16
    assert student.patch_size == official.patch_size


def test_both_targets_train_prototypes_and_projector(image_pool, teacher_dir, tmp_path):
    root, paths = image_pool
    out = tmp_path / "both"
    distill_student(_cfg(target="both"), "tiny_student", teacher_dir, root, paths, out,
                    progress=False)  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["dino_loss"] > 0 and r["feature_loss"] > 0 for r in rows)
    head = json.loads((out / "config.json").read_text())["head"]
    assert head["out_dim"] == 64 and head["feature_dim"] == 192  # teacher's K and width


def test_feature_loss_is_zero_on_the_teachers_tokens_and_trains_the_projector():
    torch.manual_seed(0)
    t = {"cls": torch.randn(4, 8), "patch_tokens": torch.randn(4, 9, 8)}
    t_local = torch.randn(6, 8)
    same = {"feat_cls": torch.cat([t["cls"], t_local]) * 3.0, "feat_patch": t["patch_tokens"]}
    assert feature_loss(same, t, t_local).item() == pytest.approx(0.0, abs=1e-6)
    proj = torch.nn.Linear(5, 8)
    s_cls, s_patch = torch.randn(10, 5), torch.randn(4, 9, 5)
    loss = feature_loss({"feat_cls": proj(s_cls), "feat_patch": proj(s_patch)}, t, t_local)
    assert 0.0 < loss.item() < 4.0  # two cosine distances, each in [0, 2]
    loss.backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


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
