"""Named backbone presets (DINOv2 sizes plus a CPU-sized ``tiny``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ssl_core.models.vit import VisionTransformer, ViTConfig

_PRESETS: dict[str, ViTConfig] = {
    # CPU demos on 32 px images (patch 4 → 8x8 grid).
    "tiny": ViTConfig(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3),
    # CPU demo student (~0.8 M parameters, a quarter of tiny's compute at 32 px).
    "tiny_student": ViTConfig(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=2),
    # DINOv2 ViT-S/14 .. ViT-g/14 at the 224 px training resolution.
    "small": ViTConfig(img_size=224, patch_size=14, embed_dim=384, depth=12, num_heads=6),
    "base": ViTConfig(img_size=224, patch_size=14, embed_dim=768, depth=12, num_heads=12),
    "large": ViTConfig(img_size=224, patch_size=14, embed_dim=1024, depth=24, num_heads=16),
    "giant": ViTConfig(
        img_size=224, patch_size=14, embed_dim=1536, depth=40, num_heads=24, ffn_layer="swiglu"
    ),
}


def list_presets() -> list[str]:
    """Names accepted by :func:`get_config` and :func:`build_vit`."""
    return list(_PRESETS)


def get_config(name: str, **overrides: Any) -> ViTConfig:
    """Config of a preset with field overrides applied (and re-validated).

    Args:
        name: Preset name, see :func:`list_presets`.
        **overrides: :class:`ViTConfig` fields to replace, e.g. ``num_register_tokens=4``.

    Raises:
        ValueError: Unknown preset name or unknown/invalid override.
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown ViT preset {name!r}; valid names: {', '.join(_PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ViTConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown ViTConfig fields {bad}; valid: {sorted(fields)}")
    return dataclasses.replace(_PRESETS[name], **overrides)


def build_vit(name: str, **overrides: Any) -> VisionTransformer:
    """Build a freshly initialised backbone from a preset.

    Args:
        name: Preset name (``tiny``, ``small``, ``base``, ``large``, ``giant``).
        **overrides: :class:`ViTConfig` fields to replace.
    """
    return VisionTransformer(get_config(name, **overrides))
