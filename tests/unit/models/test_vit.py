"""Unit tests for the ViT backbone, presets, packing and optimizer param groups."""

from __future__ import annotations

import copy

import pytest
import torch

from ssl_core.models.param_groups import param_groups
from ssl_core.models.presets import build_vit, get_config, list_presets
from ssl_core.models.vit import VisionTransformer, ViTConfig


def tiny(**kw) -> VisionTransformer:
    """Small, fast config; layer-scale 1.0 so blocks actually change the tokens."""
    base = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2, layerscale_init=1.0)
    base.update(kw)
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(**base))


# ----------------------------------------------------------------------------- config / presets
def test_config_rejects_bad_combos():
    with pytest.raises(ValueError, match="num_heads"):
        ViTConfig(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="patch_size"):
        ViTConfig(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="drop_path_rate"):
        ViTConfig(drop_path_rate=1.0)
    with pytest.raises(ValueError, match="ffn_layer"):
        ViTConfig(ffn_layer="moe")
    with pytest.raises(ValueError, match="num_register_tokens"):
        ViTConfig(num_register_tokens=-1)


def test_presets():
    assert list_presets() == [
        "tiny", "tiny_student", "tiny_student_noreg", "small", "base", "large", "giant",
        "xcit_tiny", "xcit_small", "xcit_demo",
    ]  # fmt: skip
    c = get_config("small")
    assert (c.embed_dim, c.depth, c.num_heads, c.patch_size) == (384, 12, 6, 14)
    g = get_config("giant")
    assert (g.embed_dim, g.depth, g.num_heads, g.ffn_layer, g.hidden_dim) == (
        1536, 40, 24, "swiglu", 4096,
    )  # fmt: skip
    assert get_config("large").embed_dim == 1024 and get_config("base").num_heads == 12
    m = build_vit("tiny", num_register_tokens=4)
    assert m.config.embed_dim == 192 and m.register_tokens.shape == (1, 4, 192)
    with pytest.raises(
        ValueError, match="tiny, tiny_student, tiny_student_noreg, small, base, large, giant"
    ):
        build_vit("huge")
    with pytest.raises(ValueError, match="unknown ViTConfig fields"):
        get_config("tiny", widht=3)


def test_init_weights():
    m = build_vit("tiny")
    assert m.cls_token.abs().max() < 1e-4 and m.mask_token.abs().max() == 0
    assert 0.015 < m.pos_embed.std() < 0.025
    assert 0.015 < m.blocks[0].attn.qkv.weight.std() < 0.025
    assert m.blocks[0].attn.qkv.bias.abs().max() == 0
    assert torch.all(m.blocks[0].ls1.gamma == 1e-5)


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("regs", [0, 4])
@pytest.mark.parametrize("ffn", ["mlp", "swiglu"])
@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
def test_forward_shapes(regs, ffn, hw):
    m = tiny(num_register_tokens=regs, ffn_layer=ffn).eval()
    h, w = hw
    n = (h // 4) * (w // 4)
    out = m.forward_features(torch.randn(3, 3, h, w))
    assert out["x_norm_clstoken"].shape == (3, 64)
    assert out["x_norm_regtokens"].shape == (3, regs, 64)
    assert out["x_norm_patchtokens"].shape == (3, n, 64)
    assert out["x_prenorm"].shape == (3, 1 + regs + n, 64)
    assert out["masks"] is None
    assert torch.equal(
        m(torch.zeros(2, 3, h, w)), m.forward_features(torch.zeros(2, 3, h, w))["x_norm_clstoken"]
    )
    assert ("blocks.0.mlp.w12.weight" in m.state_dict()) == (ffn == "swiglu")
    assert ("register_tokens" in m.state_dict()) == (regs > 0)


def test_bad_input_sizes():
    m = tiny()
    with pytest.raises(ValueError, match="multiple of patch size"):
        m(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="channels"):
        m(torch.randn(1, 1, 32, 32))


def test_no_layerscale_keys_absent():
    m = tiny(layerscale_init=None)
    assert not any("ls1" in k or "ls2" in k for k in m.state_dict())
    m(torch.randn(1, 3, 32, 32))


def test_intermediate_layers():
    m = tiny(num_register_tokens=2, depth=3).eval()
    x = torch.randn(2, 3, 32, 32)
    outs = m.get_intermediate_layers(x, n=2, return_class_token=True)
    assert len(outs) == 2 and outs[0][0].shape == (2, 64, 64) and outs[0][1].shape == (2, 64)
    last = m.forward_features(x)
    torch.testing.assert_close(outs[-1][1], last["x_norm_clstoken"])
    torch.testing.assert_close(outs[-1][0], last["x_norm_patchtokens"])
    (fmap,) = m.get_intermediate_layers(x, n=[0], reshape=True)
    assert fmap.shape == (2, 64, 8, 8)


# ----------------------------------------------------------------------------- drop path
def test_drop_path_train_eval():
    x = torch.randn(8, 3, 32, 32)
    m = tiny(drop_path_rate=0.5)
    m.eval()
    ref = m(x)
    assert torch.equal(ref, m(x))  # eval is deterministic
    m.train()
    torch.manual_seed(1)
    assert not torch.allclose(m(x), ref, atol=1e-4)  # train with p > 0 changes the output
    m0 = tiny(drop_path_rate=0.0)
    m0.load_state_dict(m.state_dict())
    m0.train()
    assert torch.equal(m0(x), m0.eval()(x))  # p = 0: training path == eval path


def test_drop_path_skips_compute():
    """The residual branch only sees the kept subset of the batch."""
    m = tiny(drop_path_rate=0.5, depth=1).train()
    seen = []
    m.blocks[0].attn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    m(torch.randn(8, 3, 32, 32))
    assert seen == [4]


# ----------------------------------------------------------------------------- pos embed
@pytest.mark.parametrize("offset,aa", [(0.1, False), (0.0, True)])
def test_pos_embed_interpolation(offset, aa):
    m = tiny(interpolate_offset=offset, interpolate_antialias=aa)
    assert m.interpolate_pos_encoding(32, 32) is m.pos_embed  # same grid → untouched
    assert m.interpolate_pos_encoding(48, 48).shape == (1, 1 + 144, 64)
    pe = m.interpolate_pos_encoding(16, 40)
    assert pe.shape == (1, 1 + 4 * 10, 64)
    assert torch.equal(pe[:, 0], m.pos_embed[:, 0])  # CLS position not interpolated


def test_pos_embed_modes_differ():
    a = tiny(interpolate_offset=0.1, interpolate_antialias=False)
    b = tiny(interpolate_offset=0.0, interpolate_antialias=True)
    b.load_state_dict(a.state_dict())
    pa, pb = a.interpolate_pos_encoding(16, 16), b.interpolate_pos_encoding(16, 16)
    assert pa.shape == pb.shape and not torch.allclose(pa, pb)
    # exact-size mode at 2x upsampling without antialias equals plain bicubic resize
    c = tiny(interpolate_offset=0.0)
    c.load_state_dict(a.state_dict())
    grid = a.pos_embed[:, 1:].reshape(1, 8, 8, 64).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic")
    torch.testing.assert_close(
        c.interpolate_pos_encoding(64, 64)[:, 1:], ref.flatten(2).transpose(1, 2)
    )


# ----------------------------------------------------------------------------- masking
def test_masking_replaces_tokens():
    m = tiny(num_register_tokens=2).eval()
    with torch.no_grad():
        m.mask_token.normal_()
    x = torch.randn(2, 3, 32, 32)
    none = m.forward_features(x)
    zeros = m.forward_features(x, masks=torch.zeros(2, 64, dtype=torch.bool))
    torch.testing.assert_close(none["x_prenorm"], zeros["x_prenorm"], rtol=0, atol=0)
    masks = torch.zeros(2, 64, dtype=torch.bool)
    masks[0, :10] = True
    out = m.forward_features(x, masks=masks)
    assert out["masks"] is masks
    assert not torch.allclose(out["x_prenorm"][0], none["x_prenorm"][0])
    # token-level check: masked patches equal mask_token + pos_embed before the blocks
    t = m.prepare_tokens_with_masks(x, masks)
    expect = m.mask_token[0] + m.pos_embed[0, 1:11]
    torch.testing.assert_close(t[0, 3:13], expect)
    torch.testing.assert_close(t[1], m.prepare_tokens_with_masks(x)[1])


# ----------------------------------------------------------------------------- multi-crop
def _crops(b=2):
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(b, 3, 32, 32, generator=g) for _ in range(2)]
    xs += [torch.randn(b, 3, 16, 16, generator=g) for _ in range(4)]
    masks = [torch.rand(b, 64, generator=g) < 0.3, torch.rand(b, 64, generator=g) < 0.3]
    return xs, masks + [None] * 4


@pytest.mark.parametrize("regs", [0, 4])
def test_packed_equals_naive(regs):
    xs, masks = _crops()
    m1 = tiny(num_register_tokens=regs, drop_path_rate=0.0).train()
    with torch.no_grad():
        m1.mask_token.normal_()
    m2 = copy.deepcopy(m1)
    outs = []
    for model, packed in ((m1, False), (m2, True)):
        res = model.forward_features_list(xs, masks, packed=packed)
        # means keep gradients O(1), so an absolute tolerance is meaningful
        loss = sum(
            (r["x_norm_clstoken"] ** 2).mean() + r["x_norm_patchtokens"].sin().mean()
            + r["x_norm_regtokens"].cos().sum() / 64 for r in res
        )  # fmt: skip
        loss.backward()
        outs.append(res)
    for a, b in zip(*outs, strict=True):
        for k in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
        assert a["masks"] is b["masks"]
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters(), strict=True):
        assert p1.grad.abs().max() > 1e-4, n  # every parameter gets a real gradient
        # float32 round-off scales with the gradient's size (register tokens: ~24)
        scale = max(1.0, float(p1.grad.abs().max()))
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-5, atol=1e-5 * scale, msg=n)
    # and both equal a plain per-crop forward
    single = m1.forward_features(xs[3])
    torch.testing.assert_close(single["x_prenorm"], outs[1][3]["x_prenorm"], rtol=0, atol=1e-5)


def test_packed_unequal_batches():
    """Globals (2B) and locals (4B) stacked per resolution, as the data loader produces."""
    xs, _ = _crops(b=3)
    stacked = [torch.cat(xs[:2]), torch.cat(xs[2:])]
    m = tiny().eval()
    a = m.forward_features_list(stacked, packed=False)
    b = m.forward_features_list(stacked, packed=True)
    for ra, rb in zip(a, b, strict=True):
        torch.testing.assert_close(ra["x_prenorm"], rb["x_prenorm"], rtol=0, atol=1e-5)
    assert b[1]["x_norm_patchtokens"].shape == (12, 16, 64)


def test_packed_attention_is_block_diagonal():
    """Changing one crop must not change another crop's output in the packed forward."""
    xs, _ = _crops()
    m = tiny().eval()
    a = m.forward_features_list(xs, packed=True)
    xs2 = list(xs)
    xs2[0] = xs[0] + 1.0
    b = m.forward_features_list(xs2, packed=True)
    assert not torch.allclose(a[0]["x_prenorm"], b[0]["x_prenorm"])
    for i in range(1, 6):
        torch.testing.assert_close(a[i]["x_prenorm"], b[i]["x_prenorm"], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- param groups
def test_param_groups():
    m = tiny(depth=3, num_register_tokens=2)
    groups = param_groups(m, lr=1.0, weight_decay=0.1, layer_decay=0.9, patch_embed_lr_mult=0.2)
    by_name = {n: g for g in groups for n in g["names"]}
    assert set(by_name) == {n for n, _ in m.named_parameters()}
    for n in ("cls_token", "pos_embed", "register_tokens", "mask_token", "norm.weight",
              "norm.bias", "blocks.0.norm1.weight", "blocks.1.attn.qkv.bias",
              "blocks.2.ls2.gamma", "patch_embed.proj.bias"):  # fmt: skip
        assert by_name[n]["wd_multiplier"] == 0.0 and by_name[n]["weight_decay"] == 0.0, n
    for n in ("blocks.0.attn.qkv.weight", "blocks.2.mlp.fc2.weight", "patch_embed.proj.weight"):
        assert by_name[n]["wd_multiplier"] == 1.0 and by_name[n]["weight_decay"] == 0.1, n
    lr = [by_name[f"blocks.{i}.attn.qkv.weight"]["lr_multiplier"] for i in range(3)]
    assert lr[0] < lr[1] < lr[2] < by_name["norm.weight"]["lr_multiplier"] == 1.0
    assert by_name["cls_token"]["lr_multiplier"] == pytest.approx(0.9**4)
    assert by_name["blocks.0.attn.qkv.weight"]["lr_multiplier"] == pytest.approx(0.9**3)
    assert by_name["patch_embed.proj.weight"]["lr_multiplier"] == pytest.approx(0.2 * 0.9**4)
    assert by_name["patch_embed.proj.weight"]["lr"] == pytest.approx(0.2 * 0.9**4)
    assert len({id(p) for g in groups for p in g["params"]}) == len(list(m.parameters()))
    torch.optim.AdamW(groups)  # accepted by torch


def test_param_groups_wrapped_and_frozen():
    wrapper = torch.nn.Module()
    wrapper.backbone = tiny(depth=2)
    wrapper.head = torch.nn.Linear(64, 8)
    wrapper.backbone.mask_token.requires_grad_(False)
    groups = param_groups(wrapper, lr=1.0, weight_decay=1.0)
    by_name = {n: g for g in groups for n in g["names"]}
    assert "backbone.mask_token" not in by_name
    assert by_name["backbone.blocks.1.mlp.fc1.weight"]["lr_multiplier"] == pytest.approx(0.9)
    assert by_name["head.weight"]["lr_multiplier"] == 1.0
    assert by_name["backbone.cls_token"]["wd_multiplier"] == 0.0
