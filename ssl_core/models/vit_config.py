"""Configuration of the DINOv2-style ViT backbone (re-exported by ``ssl_core.models.vit``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


def swiglu_hidden_dim(hidden_dim: int) -> int:
    """Upstream ``SwiGLUFFNFused`` sizing: 2/3 of the MLP width, rounded up to a multiple of 8.

    Args:
        hidden_dim: The width a plain MLP would use (``embed_dim * mlp_ratio``).
    """
    return (int(hidden_dim * 2 / 3) + 7) // 8 * 8


@dataclass(frozen=True)
class ViTConfig:
    """Architecture and regularisation of a :class:`VisionTransformer`."""

    img_size: int = 224
    """Training resolution; the learned position grid is ``img_size // patch_size`` square."""
    patch_size: int = 14
    """Side of the square patches."""
    in_chans: int = 3
    """Input image channels."""
    embed_dim: int = 384
    """Token width D."""
    depth: int = 12
    """Number of transformer blocks."""
    num_heads: int = 6
    """Attention heads; must divide ``embed_dim``."""
    mlp_ratio: float = 4.0
    """FFN width = ``embed_dim * mlp_ratio`` (SwiGLU: 2/3 of it, rounded up to 8)."""
    ffn_layer: Literal["mlp", "swiglu"] = "mlp"
    """``mlp`` (GELU, keys ``fc1``/``fc2``) or ``swiglu`` (keys ``w12``/``w3``)."""
    ffn_hidden_dim: int | None = None
    """Explicit FFN hidden width, overriding ``mlp_ratio`` (used for odd checkpoints)."""
    qkv_bias: bool = True
    """Bias on the qkv projection."""
    proj_bias: bool = True
    """Bias on the attention output projection."""
    ffn_bias: bool = True
    """Biases in the FFN."""
    layerscale_init: float | None = 1e-5
    """Initial layer-scale value; ``None`` disables layer-scale (no ``ls1``/``ls2`` keys)."""
    drop_path_rate: float = 0.0
    """Stochastic-depth rate (training only)."""
    drop_path_uniform: bool = True
    """Same rate in every block (DINOv2 default) instead of a linear ramp 0 → rate."""
    num_register_tokens: int = 0
    """Register tokens inserted after CLS (0 = none)."""
    interpolate_offset: float = 0.1
    """Pos-embed interpolation offset: > 0 → scale factor (n + offset) / M (original backbones);
    0 → exact output size (``_reg`` backbones)."""
    interpolate_antialias: bool = False
    """Antialias in the bicubic pos-embed interpolation (True for ``_reg`` backbones)."""

    def __post_init__(self) -> None:
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}"
            )
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size {self.img_size} not a multiple of patch_size {self.patch_size}"
            )
        if self.ffn_layer not in ("mlp", "swiglu"):
            raise ValueError(f"ffn_layer must be 'mlp' or 'swiglu', got {self.ffn_layer!r}")
        if self.mlp_ratio <= 0 or (self.ffn_hidden_dim is not None and self.ffn_hidden_dim <= 0):
            raise ValueError("FFN width must be positive")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be >= 0, got {self.num_register_tokens}")
        if self.layerscale_init is not None and self.layerscale_init <= 0:
            raise ValueError(f"layerscale_init must be > 0 or None, got {self.layerscale_init}")
        if self.interpolate_offset < 0:
            raise ValueError(f"interpolate_offset must be >= 0, got {self.interpolate_offset}")

    @property
    def grid_size(self) -> int:
        """Side of the learned position-embedding grid."""
        return self.img_size // self.patch_size

    @property
    def hidden_dim(self) -> int:
        """Actual FFN hidden width."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        h = int(self.embed_dim * self.mlp_ratio)
        return swiglu_hidden_dim(h) if self.ffn_layer == "swiglu" else h

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ViTConfig fields: {sorted(unknown)}")
        return cls(**d)
