"""Configuration of the XCiT backbone (re-exported by ``ssl_core.models.xcit``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ARCH = "xcit"
"""Value of the ``arch`` key that :meth:`XCiTConfig.to_dict` writes (a ViT config has none)."""


def stem_stages(patch_size: int) -> list[tuple[int, int]]:
    """(kernel, stride) of each convolution of the patch-embedding stem.

    ``patch_size = 2**k * r`` with ``r`` odd: ``k`` 3x3 stride-2 convolutions (the paper's stem:
    3 for patch 8, 4 for patch 16), then one ``r`` x ``r`` stride-``r`` convolution when ``r > 1``
    (an extension: patch 14 = one 3x3/2 then a 7x7/7 conv; patch 7 = a single 7x7/7 conv, i.e. a
    ViT patchify followed by BatchNorm).
    """
    if patch_size <= 0:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    k, r = 0, patch_size
    while r % 2 == 0:
        k, r = k + 1, r // 2
    return [(3, 2)] * k + ([(r, r)] if r > 1 else [])


@dataclass(frozen=True)
class XCiTConfig:
    """Architecture and regularisation of an :class:`~ssl_core.models.xcit.XCiT`.

    Field names shared with :class:`~ssl_core.models.vit_config.ViTConfig` mean the same thing,
    so presets and recipe overrides (``img_size``, ``patch_size``, ``num_register_tokens``,
    ``drop_path_rate``, ``layerscale_init``) apply to both architectures.
    """

    img_size: int = 224
    """Training resolution (informational: the Fourier encoding fits any grid)."""
    patch_size: int = 16
    """Total stride of the convolutional stem (see :func:`stem_stages`)."""
    in_chans: int = 3
    """Input image channels."""
    embed_dim: int = 384
    """Token width D."""
    depth: int = 12
    """Number of XCA blocks (the class-attention layers are extra)."""
    num_heads: int = 8
    """Heads of XCA and class attention; must divide ``embed_dim``."""
    mlp_ratio: float = 4.0
    """MLP width = ``embed_dim * mlp_ratio`` (XCA and class-attention blocks)."""
    qkv_bias: bool = True
    """Bias on the q/k/v projections."""
    cls_attn_layers: int = 2
    """Class-attention layers (CaiT) after the XCA blocks."""
    pos_dim: int = 32
    """Fourier features per axis before the 1x1 projection to D (the paper's 32)."""
    layerscale_init: float | None = 1.0
    """Initial layer-scale value (the paper: 1.0 for 12-block models, 1e-5 for deeper);
    ``None`` disables layer-scale."""
    drop_path_rate: float = 0.0
    """Stochastic-depth rate of every XCA block (training only; none in class attention)."""
    num_register_tokens: int = 0
    """Register tokens; they join at class attention (see :class:`~ssl_core.models.xcit.XCiT`)."""

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
        n = len(stem_stages(self.patch_size))
        if self.embed_dim % 2 ** (n - 1):
            raise ValueError(
                f"embed_dim {self.embed_dim} must be divisible by {2 ** (n - 1)}: the "
                f"{n}-stage conv stem of patch {self.patch_size} halves the width per stage back"
            )
        if self.cls_attn_layers < 1:
            raise ValueError(f"cls_attn_layers must be >= 1, got {self.cls_attn_layers}")
        if self.pos_dim <= 0 or self.pos_dim % 2:
            raise ValueError(f"pos_dim must be a positive even number, got {self.pos_dim}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be >= 0, got {self.num_register_tokens}")
        if self.layerscale_init is not None and self.layerscale_init <= 0:
            raise ValueError(f"layerscale_init must be > 0 or None, got {self.layerscale_init}")

    @property
    def grid_size(self) -> int:
        """Side of the patch grid at ``img_size``."""
        return self.img_size // self.patch_size

    @property
    def hidden_dim(self) -> int:
        """MLP hidden width."""
        return int(self.embed_dim * self.mlp_ratio)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of the fields plus ``"arch": "xcit"``."""
        return {"arch": ARCH, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> XCiTConfig:
        """Build from :meth:`to_dict` output; unknown keys or another ``arch`` raise ValueError."""
        d = dict(d)
        arch = d.pop("arch", ARCH)
        if arch != ARCH:
            raise ValueError(f"not an XCiT config: arch {arch!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown XCiTConfig fields: {sorted(unknown)}")
        return cls(**d)
