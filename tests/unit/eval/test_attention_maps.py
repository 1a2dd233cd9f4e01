"""CLS attention maps (planted pattern, exactness against SDPA, no lasting hook) and patch PCA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_core.eval.attention_maps import (
    _cls_attention,
    cls_attention_maps,
    has_token_attention,
    patch_pca_rgb,
)
from ssl_core.models.presets import build_backbone
from ssl_core.models.vit import VisionTransformer, ViTConfig

GRID, REGS = 4, 2  # 16 px images, patch 4; registers must stay out of the map


def _vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    cfg = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, layerscale_init=1.0)
    return VisionTransformer(ViTConfig(**{**cfg, **kw})).eval()


class _Planted(nn.Module):
    """Stands in for the last block's norm1: CLS carries feature 0, the target patch feature 1,
    every other token (registers included) is zero."""

    def __init__(self, target: int) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        out[:, 0, 0] = 1.0
        out[:, 1 + REGS + self.target, 1] = 1.0
        return out


def test_planted_attention_peaks_on_the_target_patch():
    model, target = _vit(num_register_tokens=REGS), 9  # row 2, column 1
    blk = model.blocks[-1]
    blk.norm1 = _Planted(target)
    d = model.embed_dim
    with torch.no_grad():
        w = torch.zeros(3 * d, d)
        w[:d, 0] = 10.0  # every query dimension of CLS is 10
        w[d : 2 * d, 1] = 10.0  # every key dimension of the target patch is 10, others 0
        blk.attn.qkv.weight.copy_(w)
        blk.attn.qkv.bias.zero_()
    maps = cls_attention_maps(model, torch.rand(3, 3, 16, 16))
    assert maps.shape == (3, 2, GRID, GRID)  # (B, heads, grid, grid): registers left out
    flat = maps.flatten(2)
    assert (flat.argmax(-1) == target).all()
    assert (flat[..., target] > 0.99).all()  # the whole softmax mass on the target patch
    assert torch.allclose(maps[0, 0, 2, 1], torch.tensor(1.0), atol=1e-2)


def test_recomputed_weights_are_the_ones_sdpa_applies():
    model = _vit(num_register_tokens=REGS)
    attn = model.blocks[-1].attn
    x = torch.randn(2, 1 + REGS + GRID * GRID, model.embed_dim)
    b, n, d = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, 2, d // 2).permute(2, 0, 3, 1, 4).unbind(0)
    expected = F.scaled_dot_product_attention(q, k, v)[:, :, 0]  # CLS row, (B, H, Dh)
    weights = _cls_attention(attn, x)  # (B, H, N)
    assert torch.allclose(weights.sum(-1), torch.ones(b, 2), atol=1e-6)
    assert torch.allclose((weights.unsqueeze(2) @ v).squeeze(2), expected, atol=1e-5)


def test_maps_leave_the_model_unchanged():
    model, images = _vit(num_register_tokens=REGS), torch.rand(2, 3, 16, 16)
    model.train()
    before = model.eval().forward_features(images)["x_prenorm"]
    model.train()
    cls_attention_maps(model, images)
    assert model.training  # flag restored
    assert not model.blocks[-1].attn._forward_pre_hooks  # hook removed
    after = model.eval().forward_features(images)["x_prenorm"]
    assert torch.equal(before, after)


def test_xcit_has_no_token_attention_but_gets_a_pca():
    torch.manual_seed(0)
    xcit = build_backbone("xcit_demo", img_size=16, depth=1, embed_dim=32, num_heads=2).eval()
    assert not has_token_attention(xcit) and has_token_attention(_vit())
    images = torch.rand(2, 3, 16, 16)
    assert cls_attention_maps(xcit, images) is None
    rgb = patch_pca_rgb(xcit, images)
    assert rgb.shape[0] == 2 and rgb.shape[-1] == 3


def test_pca_rgb_shape_and_range():
    rgb = patch_pca_rgb(_vit(num_register_tokens=REGS), torch.rand(6, 3, 16, 16))
    assert rgb.shape == (6, GRID, GRID, 3)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    flat = rgb.reshape(-1, 3)  # each component min-max scaled over all images together
    assert torch.allclose(flat.min(0).values, torch.zeros(3), atol=1e-6)
    assert torch.allclose(flat.max(0).values, torch.ones(3), atol=1e-6)
