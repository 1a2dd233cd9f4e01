"""Optimizer parameter groups with layer-wise lr decay and no weight decay on 1-D params.

Layer ids follow upstream DINOv2: 0 for the embeddings (patch_embed, cls/register/mask tokens,
pos_embed; XCiT's Fourier ``pos_embed.proj``), ``i + 1`` for block ``i``, ``depth + 1`` for the
final norm (and anything else, e.g. heads and XCiT's ``cls_attn_blocks``).
``lr_multiplier = layer_decay ** (depth + 1 - layer_id)``, times ``patch_embed_lr_mult`` for the
patch embedding.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from ssl_core.models.vit import VisionTransformer
from ssl_core.models.xcit import XCiT

_TOKEN_RE = re.compile(r"(^|\.)(cls_token|pos_embed|register_tokens|mask_token)$")
_PATCH_RE = re.compile(r"(^|\.)patch_embed\.")
_POS_MODULE_RE = re.compile(r"(^|\.)pos_embed\.")  # XCiT's Fourier projection (a ViT has none)
_BLOCK_RE = re.compile(r"(^|\.)blocks\.(\d+)\.(?:(\d+)\.)?")


def _depth_of(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, VisionTransformer | XCiT):
            return m.config.depth
    raise ValueError("model contains no VisionTransformer or XCiT; pass depth= explicitly")


def layer_id(name: str, depth: int) -> int:
    """Layer id of a parameter name (see module docstring); chunked ``blocks.C.I`` accepted."""
    if _TOKEN_RE.search(name) or _PATCH_RE.search(name) or _POS_MODULE_RE.search(name):
        return 0
    m = _BLOCK_RE.search(name)
    if m:
        return int(m.group(3) if m.group(3) is not None else m.group(2)) + 1
    return depth + 1


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """True for biases, norm weights, layer-scale gammas, tokens and pos_embed."""
    parts = name.split(".")
    in_norm = len(parts) >= 2 and "norm" in parts[-2]
    return (
        param.ndim <= 1
        or name.endswith(".bias")
        or in_norm
        or parts[-1] == "gamma"
        or bool(_TOKEN_RE.search(name))
    )


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float = 0.9,
    patch_embed_lr_mult: float = 0.2,
    depth: int | None = None,
) -> list[dict[str, Any]]:
    """Group trainable parameters by (lr multiplier, wd multiplier).

    Args:
        model: A :class:`VisionTransformer`, or a module containing one (other parameters,
            e.g. heads, get layer id ``depth + 1``).
        lr: Base learning rate; each group's ``lr`` is ``lr * lr_multiplier``.
        weight_decay: Base weight decay; each group's ``weight_decay`` is
            ``weight_decay * wd_multiplier``.
        layer_decay: Layer-wise lr decay factor (1.0 disables).
        patch_embed_lr_mult: Extra lr factor for ``patch_embed`` parameters.
        depth: Number of blocks; inferred from the contained ViT when omitted.

    Returns:
        List of dicts with ``params``, ``names``, ``lr``, ``weight_decay``, ``lr_multiplier``,
        ``wd_multiplier``, ready for ``torch.optim.AdamW`` (extra keys are kept by torch).
    """
    depth = _depth_of(model) if depth is None else depth
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr_mult = layer_decay ** (depth + 1 - layer_id(name, depth))
        if _PATCH_RE.search(name):
            lr_mult *= patch_embed_lr_mult
        wd_mult = 0.0 if no_weight_decay(name, p) else 1.0
        g = groups.setdefault(
            (lr_mult, wd_mult),
            {
                "params": [],
                "names": [],
                "lr_multiplier": lr_mult,
                "wd_multiplier": wd_mult,
                "lr": lr * lr_mult,
                "weight_decay": weight_decay * wd_mult,
            },
        )
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())
