"""The named backbone presets as configs (no torch: the space estimate reads them before a
job starts; :mod:`ssl_core.models.presets` builds the modules and re-exports these).

The preset name decides the architecture: ``xcit_*`` presets are :class:`XCiTConfig`, the
others :class:`ViTConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ssl_core.models.vit_config import ViTConfig
from ssl_core.models.xcit_config import XCiTConfig

BackboneConfig = ViTConfig | XCiTConfig

_PRESETS: dict[str, BackboneConfig] = {
    # CPU demos on 32 px images (patch 4 → 8x8 grid).
    "tiny": ViTConfig(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3),
    # CPU demo student (~0.8 M parameters, a quarter of tiny's compute at 32 px).
    "tiny_student": ViTConfig(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=2),
    # Its register twin (Darcet et al. 2024): the same student without register tokens, so the
    # report can show the two side by side. Its 0 registers are pinned (see pinned_fields).
    "tiny_student_noreg": ViTConfig(
        img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=2, num_register_tokens=0
    ),
    # DINOv2 ViT-S/14 .. ViT-g/14 at the 224 px training resolution.
    "small": ViTConfig(img_size=224, patch_size=14, embed_dim=384, depth=12, num_heads=6),
    "base": ViTConfig(img_size=224, patch_size=14, embed_dim=768, depth=12, num_heads=12),
    "large": ViTConfig(img_size=224, patch_size=14, embed_dim=1024, depth=24, num_heads=16),
    "giant": ViTConfig(
        img_size=224, patch_size=14, embed_dim=1536, depth=40, num_heads=24, ffn_layer="swiglu"
    ),
    # XCiT (El-Nouby et al. 2021) T12/16 and S12/16, as DINO ships them (2 class-attention layers).
    "xcit_tiny": XCiTConfig(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=4),
    "xcit_small": XCiTConfig(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=8),
    # CPU demo XCiT (~1.3 M parameters) on the 28 px demo: patch 4 (two 3x3/2 convs, the paper's
    # stem shortened) → 7x7 grid. The demo recipe's patch_size: 7 also works (stem = one 7x7/7
    # conv + BatchNorm, see ssl_core.models.xcit_config.stem_stages).
    "xcit_demo": XCiTConfig(img_size=28, patch_size=4, embed_dim=128, depth=4, num_heads=4),
}


# Fields a preset fixes whatever the recipe says: a twin that exists to differ from another
# preset in that field must keep it when a recipe overrides it for every student
# (``distill.num_register_tokens``). Callers apply them last, so they win:
# ``get_config(name, **{**overrides, **pinned_fields(name)})``.
_PINNED: dict[str, dict[str, Any]] = {"tiny_student_noreg": {"num_register_tokens": 0}}


def pinned_fields(name: str) -> dict[str, Any]:
    """Config fields preset ``name`` pins against recipe overrides (empty for most presets)."""
    return dict(_PINNED.get(name, {}))


def list_presets() -> list[str]:
    """Names accepted by :func:`get_config` and :func:`build_backbone`."""
    return list(_PRESETS)


def get_config(name: str, **overrides: Any) -> BackboneConfig:
    """Config of a preset with field overrides applied (and re-validated).

    Args:
        name: Preset name, see :func:`list_presets`.
        **overrides: Fields of the preset's config class (:class:`ViTConfig` or
            :class:`XCiTConfig`) to replace, e.g. ``num_register_tokens=4``.

    Raises:
        ValueError: Unknown preset name or unknown/invalid override.
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown backbone preset {name!r}; valid names: {', '.join(_PRESETS)}")
    base = _PRESETS[name]
    fields = {f.name for f in dataclasses.fields(base)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown {type(base).__name__} fields {bad}; valid: {sorted(fields)}")
    return dataclasses.replace(base, **overrides)


def config_from_dict(d: dict[str, Any]) -> BackboneConfig:
    """Inverse of ``config.to_dict()`` for both architectures (``arch: xcit`` or none = ViT)."""
    return XCiTConfig.from_dict(d) if d.get("arch") == "xcit" else ViTConfig.from_dict(d)
