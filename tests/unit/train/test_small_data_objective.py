"""Small-data objectives (``train.objective``: ibot, splitmask; ssl_core.train.objectives)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ssl_core.config import load_params
from ssl_core.data.augment import MultiCropAugmentation, MultiCropConfig
from ssl_core.loss.centering import sinkhorn_knopp
from ssl_core.models.param_groups import param_groups
from ssl_core.train.objectives import complementary_masks
from ssl_core.train.step import Losses, softmax_entropies, train_step
from ssl_core.train.teacher import build_teacher_model, train_teacher
from tests.unit.train.conftest import OUTPUT_FILES, _tiny_train_cfg

PARAMS_FILE = Path(__file__).resolve().parents[3] / "params.yaml"
SCHED = dict(lr=1e-3, wd=0.04, teacher_temp=0.04, momentum=0.9, last_layer_lr_mult=1.0)


class _Run:
    """Model, optimiser, losses and augmentation for direct ``train_step`` calls, with the
    teacher outputs, the student inputs and the iBOT loss inputs of the last step recorded."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.model = build_teacher_model(cfg).train()
        patch = self.model.student.backbone.patch_size
        self.augment = MultiCropAugmentation(
            MultiCropConfig.for_recipe(cfg, cfg.image_size, patch), patch
        )
        self.optimizer = torch.optim.AdamW(
            param_groups(
                self.model.student, cfg.lr, cfg.weight_decay, cfg.layer_decay,
                cfg.patch_embed_lr_mult,
            ),
            lr=cfg.lr,
        )  # fmt: skip
        self.losses = Losses(cfg.out_dim, cfg.student_temp, cfg.centering)
        self.rec: dict = {}
        real = self.model.ema.teacher_forward

        def teacher_forward(*args):
            self.rec["teacher_in"], self.rec["teacher_out"] = args, real(*args)
            return self.rec["teacher_out"]

        self.model.ema.teacher_forward = teacher_forward
        self.model.student.register_forward_pre_hook(
            lambda _m, args: self.rec.__setitem__("student_in", args)
        )
        self.losses.ibot.register_forward_hook(
            lambda _m, args, _out: self.rec.__setitem__("ibot_in", args)
        )

    def step(self, i: int, images: torch.Tensor) -> dict[str, float]:
        torch.manual_seed(100 + i)  # drop-path
        g = torch.Generator().manual_seed(i)
        return train_step(
            self.model, self.model.student, self.optimizer, self.losses, images,
            self.augment, g, SCHED, self.cfg, False,
        )  # fmt: skip


def _images(n: int = 8, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("n_patches", [16, 9])
def test_complementary_masks_are_disjoint_halves_that_cover_all_patches(n_patches):
    half_a = complementary_masks(32, n_patches, torch.Generator().manual_seed(0))
    half_b = ~half_a
    assert half_a.shape == (32, n_patches) and half_a.dtype == torch.bool
    assert not (half_a & half_b).any() and (half_a | half_b).all()
    assert (half_a.sum(1) == n_patches // 2).all()
    assert len({tuple(r.tolist()) for r in half_a}) > 1  # random per image
    again = complementary_masks(32, n_patches, torch.Generator().manual_seed(0))
    assert torch.equal(half_a, again)  # all randomness from the generator


def test_splitmask_targets_are_the_teachers_at_the_hidden_complement():
    run = _Run(_tiny_train_cfg(objective="splitmask"))
    m = run.step(0, _images())
    globals_in, locals_in, masks, _packed = run.rec["student_in"]
    n = masks.shape[0] // 2  # n_g B crops, each encoded twice
    assert locals_in is None and n == 2 * 8
    t_in, t_masks = run.rec["teacher_in"]
    assert torch.equal(globals_in, torch.cat([t_in, t_in]))  # same crops, both passes
    assert t_masks.all()  # teacher: unmasked crop, scores on every patch
    # pass A hides half B and pass B hides half A: complementary, each half of the patches
    pass_a, pass_b = masks[:n], masks[n:]
    assert not (pass_a & pass_b).any() and (pass_a | pass_b).all()
    assert (pass_a.sum(1) - pass_b.sum(1)).abs().max() <= 1
    # the loss scores each pass exactly on the positions that pass did not see ...
    s_logits, t_probs, loss_masks = run.rec["ibot_in"]
    assert torch.equal(loss_masks, masks)
    # ... against the teacher's patch targets at those positions (centred over all tokens)
    t_logits = run.rec["teacher_out"]["ibot_logits"]  # (n N, K), every patch
    t_all = sinkhorn_knopp(t_logits, SCHED["teacher_temp"], n_iterations=3).view(n, -1, 64)
    expected = torch.cat([t_all[pass_a], t_all[pass_b]])
    torch.testing.assert_close(t_probs, expected)
    assert s_logits.shape == expected.shape and m["n_masked"] == t_logits.shape[0]
    for key in ("loss", "dino_loss", "ibot_loss", "koleo_loss", "grad_norm"):
        assert math.isfinite(m[key]), key


@pytest.mark.parametrize("objective", ["ibot", "splitmask"])
def test_collapse_signal_reads_the_teachers_patch_head(objective):
    run = _Run(_tiny_train_cfg(objective=objective, image_size=32))
    m = run.step(0, _images(size=32))
    t_patch = run.rec["teacher_out"]["ibot_logits"]
    assert t_patch.shape[0] > 0
    h, h_mean = softmax_entropies(t_patch, SCHED["teacher_temp"])
    assert m["teacher_entropy"] == h and m["teacher_marginal_entropy"] == h_mean
    assert m["log_k"] == pytest.approx(math.log(64))
    cls_h, _ = softmax_entropies(run.rec["teacher_out"]["dino_logits"], SCHED["teacher_temp"])
    assert cls_h != h  # not the CLS scores of dinov2


def test_ibot_masks_every_global_and_skips_local_crops():
    # mask_probability 0 would mask no image in dinov2; ibot forces 1.0
    run = _Run(_tiny_train_cfg(objective="ibot", image_size=32, mask_probability=0.0))
    m = run.step(0, _images(size=32))
    _globals, locals_in, masks, _packed = run.rec["student_in"]
    assert locals_in is None
    assert masks.any(dim=1).all() and m["n_masked"] == int(masks.sum()) > 0
    # the teacher's targets are at the positions the student saw masked
    assert torch.equal(run.rec["teacher_in"][1], masks)
    assert math.isfinite(m["loss"]) and m["dino_loss"] > 0  # in-view CLS distillation


def _two_steps(cfg) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    run = _Run(cfg)
    ms = [run.step(i, _images()) for i in range(2)]
    return ms, run.model.state_dict()


def test_objective_dinov2_is_identical_to_params_without_the_key(tmp_path):
    text = PARAMS_FILE.read_text()
    lines = text.splitlines(keepends=True)
    key_lines = [ln for ln in lines if ln.strip().startswith("objective:")]
    assert len(key_lines) == 1 and key_lines[0].split("#")[0].split()[1] == "dinov2"
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    (tmp_path / "with" / "params.yaml").write_text(text)
    without_text = "".join(ln for ln in lines if ln not in key_lines)
    (tmp_path / "without" / "params.yaml").write_text(without_text)
    with_key = load_params(tmp_path / "with" / "params.yaml").train
    without = load_params(tmp_path / "without" / "params.yaml").train
    assert with_key.objective == without.objective == "dinov2" and with_key == without
    # the repo's recipe, shrunk to a CPU-cheap size (same for both)
    small = dict(image_size=16, patch_size=4, out_dim=64, head_hidden_dim=64,
                 head_bottleneck_dim=32, n_local_crops=2, num_threads=1)  # fmt: skip
    ms_a, sd_a = _two_steps(with_key.model_copy(update=small))
    ms_b, sd_b = _two_steps(without.model_copy(update=small))
    assert ms_a == ms_b
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


@pytest.mark.parametrize("objective", ["ibot", "splitmask"])
def test_train_teacher_runs_in_small_data_mode(image_pool, tmp_path, objective):
    root, paths = image_pool
    summary = train_teacher(
        _tiny_train_cfg(objective=objective, max_steps=3), root, paths, tmp_path, progress=False
    )
    for name in OUTPUT_FILES:
        assert (tmp_path / name).is_file(), name
    assert summary["steps"] == 3 and math.isfinite(summary["final_loss"])
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 3]
    for r in lines:
        for key in ("loss", "dino_loss", "ibot_loss", "koleo_loss", "teacher_entropy"):
            assert math.isfinite(r[key]), key
    cfg_json = json.loads((tmp_path / "config.json").read_text())
    assert cfg_json["train"]["objective"] == objective
