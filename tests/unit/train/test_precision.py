"""Mixed precision (issue #20): ``train.precision`` picks bf16 autocast or fp32, attention on CPU
stays fp32 inside bf16 autocast, and a bf16 run's loss curve is the fp32 run's within bf16
rounding (same meaning)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_core.models.attention import Attention, sdpa
from ssl_core.train.precision import autocast, native_bf16, resolve_precision
from ssl_core.train.trainer import adamw_implementation
from tests.unit.train.conftest import loss_curve

CPU = torch.device("cpu")


def test_resolve_precision():
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("auto", CPU) == ("bf16" if native_bf16("cpu") else "fp32")
    assert resolve_precision("auto", torch.device("meta")) == "fp32"
    with pytest.raises(ValueError, match="one of"):
        resolve_precision("fp16", CPU)


def test_autocast_runs_the_projections_in_bf16_only_when_asked():
    layer, x = nn.Linear(8, 4), torch.randn(3, 8)
    with autocast(CPU, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert layer(x).dtype == torch.float32


def test_sdpa_on_bf16_cpu_inputs_is_fp32_attention_of_the_rounded_inputs():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 2, 9, 16, generator=g).bfloat16().requires_grad_() for _ in range(3))
    out = sdpa(q, k, v)
    assert out.dtype == torch.bfloat16
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).bfloat16()
    assert torch.equal(out, ref)
    out.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.bfloat16 and q.grad.abs().sum() > 0
    # fp32 inputs: plain SDPA, bit for bit
    qf, kf, vf = q.detach().float(), k.detach().float(), v.detach().float()
    assert torch.equal(sdpa(qf, kf, vf), F.scaled_dot_product_attention(qf, kf, vf))


def test_attention_under_bf16_autocast_matches_fp32():
    torch.manual_seed(0)
    attn, x = Attention(32, 4), torch.randn(2, 9, 32)
    ref = attn(x)
    with autocast(CPU, "bf16"):
        out = attn(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.02)


def test_bf16_loss_curve_follows_fp32(image_pool, tiny_train_cfg):
    """Fixed seed, 8 steps of the full step (DINO + iBOT + KoLeo, Sinkhorn-Knopp, AdamW, EMA):
    bf16 autocast's loss curve is fp32's within bf16 rounding, and both move."""
    cfg = tiny_train_cfg(epochs=1, freeze_last_layer_epochs=0.25, lr=1e-3, precision="fp32")
    opt = adamw_implementation("single")
    fp32 = loss_curve(opt, image_pool, cfg, 8)
    bf16 = loss_curve(opt, image_pool, cfg.model_copy(update={"precision": "bf16"}), 8)
    assert fp32 != bf16  # the bf16 path ran
    torch.testing.assert_close(torch.tensor(bf16), torch.tensor(fp32), rtol=5e-3, atol=0.0)
    assert fp32[0] != fp32[-1]
