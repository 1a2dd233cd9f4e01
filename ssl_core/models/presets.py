"""Named backbone presets: DINOv2 ViT sizes, XCiT sizes, and CPU-sized ones for the demos.

The preset name decides the architecture: ``xcit_*`` presets build an
:class:`~ssl_core.models.xcit.XCiT`, the others a
:class:`~ssl_core.models.vit.VisionTransformer`. Both take the same recipe overrides
(``img_size``, ``patch_size``, ``num_register_tokens``, ``drop_path_rate``, ``layerscale_init``).
"""

from __future__ import annotations

from typing import Any

from ssl_core.models.preset_configs import (  # noqa: F401 (re-exported)
    BackboneConfig,
    config_from_dict,
    get_config,
    list_presets,
    pinned_fields,
)
from ssl_core.models.vit import VisionTransformer, ViTConfig
from ssl_core.models.xcit import XCiT, XCiTConfig

Backbone = VisionTransformer | XCiT


def build_from_config(config: BackboneConfig) -> Backbone:
    """Freshly initialised backbone of a config: :class:`XCiT` or :class:`VisionTransformer`."""
    if isinstance(config, XCiTConfig):
        return XCiT(config)
    if isinstance(config, ViTConfig):
        return VisionTransformer(config)
    raise TypeError(f"not a backbone config: {type(config).__name__}")


def build_backbone(name: str, **overrides: Any) -> Backbone:
    """Build a freshly initialised backbone (ViT or XCiT, by preset) from a preset.

    Args:
        name: Preset name, see :func:`list_presets`.
        **overrides: Config fields to replace (see :func:`get_config`).
    """
    return build_from_config(get_config(name, **overrides))


def build_vit(name: str, **overrides: Any) -> VisionTransformer:
    """Build a freshly initialised ViT from a ViT preset.

    Args:
        name: Preset name (``tiny``, ``small``, ``base``, ``large``, ``giant``, ...).
        **overrides: :class:`ViTConfig` fields to replace.

    Raises:
        ValueError: ``name`` is not a ViT preset (use :func:`build_backbone` for XCiT).
    """
    cfg = get_config(name, **overrides)
    if not isinstance(cfg, ViTConfig):
        raise ValueError(f"preset {name!r} is not a ViT; use build_backbone")
    return VisionTransformer(cfg)
