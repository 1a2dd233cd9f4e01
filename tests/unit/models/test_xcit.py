"""XCiT backbone: XCA / class attention against einsum references, LPI locality, the ViT
backbone interface (shapes, non-square inputs, iBOT masks, registers), save/load, and the
training engine (teacher pretraining, distillation both ways) on a few CPU steps."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from ssl_core.config import DistillConfig
from ssl_core.eval.model_cost import backbone_cost
from ssl_core.models.official import (
    CONFIG_METADATA_KEY,
    infer_config,
    load_backbone,
    save_backbone,
)
from ssl_core.models.param_groups import layer_id, param_groups
from ssl_core.models.presets import build_backbone, build_vit, get_config
from ssl_core.models.xcit import LPI, XCA, ClassAttention, XCiT, XCiTConfig
from ssl_core.models.xcit_config import stem_stages
from ssl_core.train.distill import distill_student
from ssl_core.train.teacher import train_teacher
from tests.unit.train.conftest import OUTPUT_FILES, _tiny_train_cfg, make_images


def _model(**kw) -> XCiT:
    torch.manual_seed(0)
    return build_backbone("xcit_demo", depth=2, **kw).eval()


# --------------------------------------------------------------------------- operators
def test_xca_matches_the_formula():
    torch.manual_seed(0)
    b, n, d, h = 2, 11, 24, 3
    xca = XCA(d, h)
    with torch.no_grad():
        xca.temperature.copy_(torch.tensor([0.5, 1.0, 3.0]))
        xca.qkv.bias.normal_()
    x = torch.randn(b, n, d)
    q, k, v = F.linear(x, xca.qkv.weight, xca.qkv.bias).reshape(b, n, 3, h, d // h).unbind(2)
    # (B, N, H, dh) each; L2 norm of every channel over the N tokens
    qh = q / q.pow(2).sum(dim=1, keepdim=True).sqrt()
    kh = k / k.pow(2).sum(dim=1, keepdim=True).sqrt()
    logits = torch.einsum("bnhi,bnhj->bhij", qh, kh) * xca.temperature[None, :, None, None]
    a = logits.softmax(dim=-1)  # (B, H, dh, dh), normalised over the key channels j
    out = torch.einsum("bhij,bnhj->bnhi", a, v).reshape(b, n, d)  # V Aᵀ
    ref = F.linear(out, xca.proj.weight, xca.proj.bias)
    torch.testing.assert_close(xca(x), ref, rtol=1e-5, atol=1e-6)
    # channel attention: a token permutation permutes the output the same way
    perm = torch.randperm(n)
    torch.testing.assert_close(xca(x[:, perm]), xca(x)[:, perm], rtol=1e-5, atol=1e-6)


def test_class_attention_matches_the_formula():
    torch.manual_seed(0)
    b, nc, n, d, h = 2, 3, 9, 16, 4
    ca = ClassAttention(d, h)
    c, z = torch.randn(b, nc, d), torch.randn(b, n, d)
    w, bias = ca.qkv.weight, ca.qkv.bias
    q = F.linear(c, w[:d], bias[:d]).reshape(b, nc, h, d // h)
    k, v = F.linear(z, w[d:], bias[d:]).reshape(b, n, 2, h, d // h).unbind(2)
    a = (torch.einsum("bchx,bnhx->bhcn", q, k) / math.sqrt(d // h)).softmax(dim=-1)
    ref = F.linear(torch.einsum("bhcn,bnhx->bchx", a, v).reshape(b, nc, d), ca.proj.weight,
                   ca.proj.bias)  # fmt: skip
    torch.testing.assert_close(ca(c, z), ref, rtol=1e-5, atol=1e-6)


def test_lpi_is_a_local_depthwise_op_on_the_grid():
    torch.manual_seed(0)
    gh, gw, d = 7, 9, 8
    lpi = LPI(d).eval()
    with torch.no_grad():
        lpi.bn.running_mean.normal_()
        lpi.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, gh * gw, d)
    r, c, ch = 3, 2, 5
    y = x.clone()
    y[0, r * gw + c, ch] += 1.0
    diff = (lpi(y, gh, gw) - lpi(x, gh, gw)).abs().reshape(2, gh, gw, d)
    assert diff[1].max() == 0  # other images untouched (eval-mode BatchNorm)
    others = [i for i in range(d) if i != ch]
    assert diff[0, :, :, others].max() == 0  # depth-wise: only the changed channel
    changed = diff[0, :, :, ch] > 0
    window = torch.zeros(gh, gw, dtype=torch.bool)
    window[max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3] = True  # two 3x3 convs: 5x5 field
    assert torch.equal(changed, window)
    # one conv alone reaches the 3x3 neighbourhood only
    g = torch.zeros(1, d, gh, gw)
    g[0, ch, r, c] = 1.0
    one = lpi.conv1(g) - lpi.conv1(torch.zeros_like(g))
    near = torch.zeros(gh, gw, dtype=torch.bool)
    near[r - 1 : r + 2, c - 1 : c + 2] = True
    assert torch.equal(one[0, ch].abs() > 0, near)


def test_stem_stages_and_config_checks():
    assert stem_stages(16) == [(3, 2)] * 4 and stem_stages(8) == [(3, 2)] * 3
    assert stem_stages(4) == [(3, 2)] * 2
    assert stem_stages(7) == [(7, 7)] and stem_stages(14) == [(3, 2), (7, 7)]
    with pytest.raises(ValueError, match="divisible by 8"):
        XCiTConfig(img_size=32, patch_size=16, embed_dim=36, num_heads=4)
    with pytest.raises(ValueError, match="not a multiple"):
        XCiTConfig(img_size=30, patch_size=4, embed_dim=32, num_heads=4)
    c = XCiTConfig(img_size=28, patch_size=4, embed_dim=32, num_heads=4, num_register_tokens=2)
    assert c.to_dict()["arch"] == "xcit" and XCiTConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="not an XCiT"):
        XCiTConfig.from_dict({**c.to_dict(), "arch": "vit"})


def test_presets_pick_the_architecture():
    assert isinstance(get_config("xcit_small"), XCiTConfig)
    s = build_backbone("xcit_small")
    assert isinstance(s, XCiT) and (s.embed_dim, len(s.blocks), s.patch_size) == (384, 12, 16)
    assert 25e6 < sum(p.numel() for p in s.parameters()) < 27e6  # the paper's XCiT-S12: 26 M
    assert build_backbone("xcit_tiny").config.num_heads == 4
    assert type(build_backbone("tiny")).__name__ == "VisionTransformer"
    with pytest.raises(ValueError, match="not a ViT"):
        build_vit("xcit_demo")
    with pytest.raises(ValueError, match="unknown XCiTConfig fields"):
        get_config("xcit_demo", ffn_layer="swiglu")


# --------------------------------------------------------------------------- backbone
@pytest.mark.parametrize("regs", [0, 3])
def test_shapes_non_square(regs):
    m = _model(num_register_tokens=regs)
    x = torch.randn(2, 3, 28, 56)
    out = m.forward_features(x)
    n = 7 * 14
    assert out["x_norm_clstoken"].shape == (2, 128)
    assert out["x_norm_regtokens"].shape == (2, regs, 128)
    assert out["x_norm_patchtokens"].shape == (2, n, 128)
    assert out["x_prenorm"].shape == (2, 1 + regs + n, 128)
    assert m(x).shape == (2, 128)
    # the Fourier encoding follows the grid: 28x56 and 56x28 are not transposes of each other
    assert m.pos_embed(7, 14).shape == (1, n, 128)
    tall = m.forward_features(torch.randn(1, 3, 56, 28))["x_norm_patchtokens"]
    assert tall.shape == (1, n, 128)
    layers = m.get_intermediate_layers(x, 2, reshape=True, return_class_token=True)
    assert [p.shape for p, _ in layers] == [(2, 128, 7, 14)] * 2
    # the last layer's pair is the forward's output
    torch.testing.assert_close(layers[-1][1], out["x_norm_clstoken"])
    flat = m.get_intermediate_layers(x, [0])[0]
    assert flat.shape == (2, n, 128)
    with pytest.raises(ValueError, match="not a multiple"):
        m(torch.randn(1, 3, 28, 30))


def test_patch_tokens_come_from_the_xca_stage_only():
    """CLS / registers enter at class attention: they never change the patch tokens, and class
    attention leaves the patch tokens of the last XCA block as they are."""
    m = _model(num_register_tokens=2)
    x = torch.randn(2, 3, 28, 28)
    out = m.forward_features(x)
    t, (h, w) = m.prepare_patches(x)
    for blk in m.blocks:
        t = blk(t, h, w)
    torch.testing.assert_close(out["x_prenorm"][:, 3:], t, rtol=0, atol=0)
    with torch.no_grad():
        m.cls_token.normal_()
        m.register_tokens.normal_()
    out2 = m.forward_features(x)
    assert torch.equal(out2["x_norm_patchtokens"], out["x_norm_patchtokens"])
    assert not torch.allclose(out2["x_norm_clstoken"], out["x_norm_clstoken"])
    assert not torch.allclose(out2["x_norm_regtokens"], out["x_norm_regtokens"])


def test_ibot_masks_change_the_masked_outputs():
    m = _model()
    with torch.no_grad():
        m.mask_token.normal_()
    x = torch.randn(2, 3, 28, 28)
    masks = torch.zeros(2, 49, dtype=torch.bool)
    masks[0, [3, 10, 24]] = True
    ref = m.forward_features(x)["x_norm_patchtokens"]
    got = m.forward_features(x, masks)["x_norm_patchtokens"]
    delta = (got - ref).abs().amax(dim=-1)  # (B, N)
    assert (delta[masks] > 1e-3).all()
    assert torch.equal(got[1], ref[1])  # unmasked image: same output (eval-mode BatchNorm)
    none = m.forward_features(x, torch.zeros_like(masks))["x_norm_patchtokens"]
    assert torch.equal(none, ref)
    with pytest.raises(ValueError, match="masks shape"):
        m.forward_features(x, masks[:, :10])


def test_multi_crop_list_matches_single_forwards_and_refuses_packing():
    m = _model()
    g, loc = torch.randn(4, 3, 28, 28), torch.randn(6, 3, 12, 12)
    masks = torch.rand(4, 49) < 0.3
    outs = m.forward_features_list([g, loc], [masks, None])
    torch.testing.assert_close(outs[0]["x_norm_patchtokens"],
                               m.forward_features(g, masks)["x_norm_patchtokens"])  # fmt: skip
    torch.testing.assert_close(outs[1]["x_norm_clstoken"], m(loc))
    for packed in (True, "dense", "flex"):
        with pytest.raises(ValueError, match="no packed forward"):
            m.forward_features_list([g, loc], packed=packed)


def test_train_mode_with_drop_path_backpropagates():
    m = build_backbone("xcit_demo", depth=2, drop_path_rate=0.5, num_register_tokens=1).train()
    out = m.forward_features_list([torch.randn(4, 3, 28, 28), torch.randn(4, 3, 12, 12)])
    loss = sum(o["x_norm_clstoken"].sum() + o["x_norm_patchtokens"].sum() for o in out)
    loss.backward()
    assert m.blocks[0].attn.temperature.grad is not None
    assert m.patch_embed.proj[0].weight.grad.abs().sum() > 0


def test_param_groups_and_cost():
    m = _model()
    depth = m.config.depth
    assert layer_id("pos_embed.proj.weight", depth) == 0
    assert layer_id("patch_embed.proj.3.weight", depth) == 0
    assert layer_id("blocks.1.local_mp.conv1.weight", depth) == 2
    assert layer_id("cls_attn_blocks.0.attn.qkv.weight", depth) == depth + 1
    groups = param_groups(m, lr=1.0, weight_decay=1.0)
    no_wd = {n for g in groups if g["wd_multiplier"] == 0 for n in g["names"]}
    assert "blocks.0.attn.temperature" in no_wd and "cls_token" in no_wd
    assert "blocks.0.attn.qkv.weight" not in no_wd
    cost = backbone_cost(m, 28)
    assert cost["gflops_per_image"] == pytest.approx(m.forward_flops(28, 28) / 1e9)
    assert 0.5 < cost["params_m"] < 2


# --------------------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    m = build_backbone("xcit_demo", patch_size=7, num_register_tokens=2).train()
    with torch.no_grad():
        for _ in range(3):  # move the BatchNorm running statistics off their init
            m(torch.randn(4, 3, 28, 28) * 2 + 1)
    m.eval()
    path = save_backbone(m, tmp_path / "model.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[CONFIG_METADATA_KEY])
    assert meta["arch"] == "xcit" and meta["patch_size"] == 7
    back = load_backbone(path)
    assert isinstance(back, XCiT) and back.config == m.config and not back.training
    x = torch.randn(2, 3, 28, 42)
    a, b = m.forward_features(x), back.forward_features(x)
    for k in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens"):
        assert torch.equal(a[k], b[k]), k
    sd = m.state_dict()
    assert torch.equal(back.patch_embed.proj[1].running_var, sd["patch_embed.proj.1.running_var"])
    with pytest.raises(ValueError, match="XCiT backbone"):
        infer_config(sd)
    torch.testing.assert_close(load_backbone(sd, config=m.config)(x), m(x))


# --------------------------------------------------------------------------- engine
@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("xcit_pool")
    return root, make_images(root, 32)


@pytest.fixture(scope="module")
def xcit_teacher(pool, tmp_path_factory):
    root, paths = pool
    out = tmp_path_factory.mktemp("xcit_teacher")
    cfg = _tiny_train_cfg(preset="xcit_demo", max_steps=2, image_size=16, epochs=1)
    summary = train_teacher(cfg, root, paths, out, progress=False)
    return out, summary


def test_train_teacher_with_an_xcit_preset(xcit_teacher):
    out, summary = xcit_teacher
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vit"]["arch"] == "xcit" and cfg["vit"]["num_register_tokens"] == 2
    m = load_backbone(out / "model.safetensors")
    assert isinstance(m, XCiT) and m(torch.rand(2, 3, 16, 16)).isfinite().all()
    # the EMA's BatchNorm statistics moved off their init (teacher forwards + buffer EMA)
    assert not torch.equal(m.patch_embed.proj[1].running_mean, torch.zeros(64))


def _distill_cfg(**kw) -> DistillConfig:
    base = dict(
        epochs=1,
        batch_size=16,
        max_steps=1,
        n_local_crops=2,
        num_register_tokens=1,
        head_hidden_dim=32,
        head_bottleneck_dim=16,
        log_every=1,
        num_threads=1,
    )
    return DistillConfig(**{**base, **kw})


def test_distill_xcit_student_from_vit_teacher(pool, tmp_path):
    root, paths = pool
    teacher = tmp_path / "vit_teacher"
    train_teacher(_tiny_train_cfg(max_steps=1, epochs=1), root, paths, teacher, progress=False)
    out = tmp_path / "student"
    summary = distill_student(_distill_cfg(), "xcit_demo", teacher, root, paths, out,
                              progress=False)  # fmt: skip
    assert summary["steps"] == 1 and math.isfinite(summary["final_loss"])
    s = load_backbone(out / "model.safetensors")
    assert isinstance(s, XCiT) and s.patch_size == 4 and s.num_register_tokens == 1
    # the EMA never runs a forward in distillation: its BN statistics come from the buffer EMA
    assert not torch.equal(s.patch_embed.proj[1].running_mean, torch.zeros(64))
    assert json.loads((out / "config.json").read_text())["teacher_vit"].get("arch") is None


def test_distill_vit_student_from_xcit_teacher(pool, xcit_teacher, tmp_path):
    root, paths = pool
    summary = distill_student(_distill_cfg(), "tiny_student", xcit_teacher[0], root, paths,
                              tmp_path, progress=False)  # fmt: skip
    assert summary["steps"] == 1 and math.isfinite(summary["final_loss"])
    s = load_backbone(tmp_path / "model.safetensors")
    assert type(s).__name__ == "VisionTransformer" and s.patch_size == 4
    assert json.loads((tmp_path / "config.json").read_text())["teacher_vit"]["arch"] == "xcit"
