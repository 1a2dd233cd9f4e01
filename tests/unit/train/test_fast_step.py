"""The step's speed paths change no result (issue #20): a frozen last layer's weight gradient is
not computed (same gradients, bit for bit); fused AdamW follows the per-parameter loop, and the
written-out soft cross-entropy with the matrix-product patch embedding follows autograd's
composite and the strided convolution, within float rounding over a fixed-seed run."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ssl_core.loss.dino as dino_mod
import ssl_core.loss.ibot as ibot_mod
from ssl_core.data.augment import MultiCropAugmentation, MultiCropConfig
from ssl_core.models.heads import cancel_last_layer_gradients, last_layer_grads_off
from ssl_core.models.patch_embed import PatchEmbed
from ssl_core.train.objectives import compute_terms
from ssl_core.train.step import Losses
from ssl_core.train.teacher import build_teacher_model
from ssl_core.train.trainer import adamw_implementation
from tests.unit.loss.conftest import composite_soft_ce
from tests.unit.train.conftest import first_images, loss_curve


def _grads(model, x, aug, cfg, off: bool) -> dict[str, torch.Tensor | None]:
    """Gradients of one DINO + iBOT + KoLeo loss, the last layer cancelled as while frozen."""
    model.student.zero_grad(set_to_none=True)
    losses = Losses(cfg.out_dim, cfg.student_temp, cfg.centering)
    g = torch.Generator().manual_seed(3)
    crops = aug(x, generator=g)
    with last_layer_grads_off(model.student, off):
        t = compute_terms("dinov2", model, model.student, losses, crops, aug.patch_size, g, 0.04,
                          cfg, False)  # fmt: skip
    t.loss.backward()
    cancel_last_layer_gradients(model.student, 0, 1)
    return {n: (p.grad.clone() if p.grad is not None else None)
            for n, p in model.student.named_parameters()}  # fmt: skip


def test_skipping_the_frozen_last_layer_gradient_changes_no_gradient(image_pool, tiny_train_cfg):
    cfg = tiny_train_cfg(mask_probability=1.0)
    model = build_teacher_model(cfg).train()
    aug = MultiCropAugmentation(MultiCropConfig.for_recipe(cfg, cfg.image_size, 4), 4)
    x = first_images(image_pool, cfg)
    ref, fast = _grads(model, x, aug, cfg, off=False), _grads(model, x, aug, cfg, off=True)
    assert ref.keys() == fast.keys()
    for name, g in ref.items():
        if "last_layer" in name:
            assert g is None and fast[name] is None, name
        else:
            assert g is not None and torch.equal(g, fast[name]), name
    # restored: the last layer trains again once unfrozen
    v = [p for n, p in model.student.named_parameters() if "last_layer" in n]
    assert any(p.requires_grad for p in v)


def test_fused_adamw_follows_the_reference_loop(image_pool, tiny_train_cfg):
    """Fixed seed, 8 steps (the last layer frozen for the first 2, then trained): the loss curve
    of the step as the trainer builds it (fused AdamW) matches the per-parameter loop."""
    # fp32: the claim is equality to fp32 round-off (bf16's 8-bit rounding would amplify it)
    cfg = tiny_train_cfg(epochs=1, freeze_last_layer_epochs=0.25, lr=1e-3, precision="fp32")
    assert adamw_implementation("single") == {"fused": True}
    fused = loss_curve(adamw_implementation("single"), image_pool, cfg, 8)
    loop = loss_curve({"foreach": False}, image_pool, cfg, 8)
    assert torch.allclose(torch.tensor(fused), torch.tensor(loop), rtol=1e-4, atol=1e-5), (
        fused,
        loop,
    )
    assert fused[0] != fused[-1]  # the run moved: the comparison is not of a constant


def _conv_patch_embed(self, x):  # noqa: ANN001, ANN202
    """The strided convolution the matrix-product patch embedding replaces."""
    return F.conv2d(x, self.proj.weight, self.proj.bias, stride=self.patch_size).flatten(2).mT


def test_written_out_loss_and_patch_matmul_follow_the_composites(
    image_pool, tiny_train_cfg, monkeypatch
):
    """Fixed seed, 8 steps: the loss curve of the step as it runs (soft cross-entropy with its
    closed-form backward, patch embedding as one matrix product) matches the same step with
    autograd's composite of the loss and the strided convolution (fp32, as above)."""
    cfg = tiny_train_cfg(epochs=1, freeze_last_layer_epochs=0.25, lr=1e-3, precision="fp32")
    fast = loss_curve(adamw_implementation("single"), image_pool, cfg, 8)
    monkeypatch.setattr(dino_mod, "soft_cross_entropy", composite_soft_ce)
    monkeypatch.setattr(ibot_mod, "soft_cross_entropy", composite_soft_ce)
    monkeypatch.setattr(PatchEmbed, "forward", _conv_patch_embed)
    ref = loss_curve(adamw_implementation("single"), image_pool, cfg, 8)
    assert torch.allclose(torch.tensor(fast), torch.tensor(ref), rtol=1e-4, atol=1e-5), (fast, ref)
    assert fast[0] != fast[-1]  # the run moved: the comparison is not of a constant
