"""Parameter counts of a backbone from its config alone: no torch import, nothing built.

The free-space check of ``sslops teacher`` / ``students`` runs before their job is submitted;
counting by building the backbone (even on the meta device) imported torch for ~2.4 s in a
process that otherwise never needs it. The counts are exact:
``tests/unit/models/test_param_count.py`` compares them with the built modules of every preset
(with and without registers, layer-scale, biases, SwiGLU), so an architecture change that
forgets this file fails there.
"""

from __future__ import annotations

from ssl_core.models.vit_config import ViTConfig
from ssl_core.models.xcit_config import XCiTConfig, stem_stages


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _block(d: int, ffn: int, ls: bool, qkv_bias: bool, proj_bias: bool = True) -> int:
    """Two LayerNorms, q/k/v + output projections, the FFN's ``ffn``, two layer-scales."""
    attn = _linear(d, 3 * d, qkv_bias) + _linear(d, d, proj_bias)
    return 2 * 2 * d + attn + ffn + (2 * d if ls else 0)


def count_vit(c: ViTConfig) -> int:
    """Parameters of :class:`~ssl_core.models.vit.VisionTransformer` built from ``c``."""
    d, h = c.embed_dim, c.hidden_dim
    gated = 2 if c.ffn_layer == "swiglu" else 1  # SwiGLU's w12 holds both halves
    ffn = _linear(d, gated * h, c.ffn_bias) + _linear(h, d, c.ffn_bias)
    block = _block(d, ffn, c.layerscale_init is not None, c.qkv_bias, c.proj_bias)
    tokens = d * (1 + (1 + c.grid_size**2) + c.num_register_tokens + 1)  # cls, pos, reg, mask
    patch = c.in_chans * c.patch_size**2 * d + d
    return patch + tokens + c.depth * block + 2 * d


def count_xcit(c: XCiTConfig) -> int:
    """Parameters of :class:`~ssl_core.models.xcit.XCiT` built from ``c`` (BatchNorm running
    statistics are buffers, not parameters)."""
    d, h = c.embed_dim, c.hidden_dim
    ls = c.layerscale_init is not None
    stages = stem_stages(c.patch_size)
    stem, c_in = 0, c.in_chans
    for i, (k, _s) in enumerate(stages):
        c_out = d // 2 ** (len(stages) - 1 - i)
        stem += c_in * c_out * k * k + 2 * c_out  # bias-free conv + BatchNorm
        c_in = c_out
    lpi = 2 * (9 * d + d) + 2 * d + 2 * d + (d if ls else 0)  # 2 dw convs, BN, LN, layer-scale
    mlp = _linear(d, h) + _linear(h, d)
    xca = _block(d, mlp, ls, c.qkv_bias) + c.num_heads + lpi  # + per-head temperature
    cls_attn = _block(d, mlp, ls, c.qkv_bias)
    tokens = d * (1 + c.num_register_tokens + 1)  # cls, registers, mask
    pos = _linear(2 * c.pos_dim, d)
    return stem + pos + tokens + c.depth * xca + c.cls_attn_layers * cls_attn + 2 * d


def count_backbone(config: ViTConfig | XCiTConfig) -> int:
    """Parameters of the backbone :func:`ssl_core.models.presets.build_from_config` builds."""
    if isinstance(config, XCiTConfig):
        return count_xcit(config)
    if isinstance(config, ViTConfig):
        return count_vit(config)
    raise TypeError(f"not a backbone config: {type(config).__name__}")
