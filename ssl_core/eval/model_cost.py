"""What a model costs to run: parameters, GFLOPs per image and measured images/s."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ssl_core.models.xcit import XCiT
from ssl_core.train.flops import vit_forward_flops


def backbone_cost(backbone: torch.nn.Module, image_size: int) -> dict[str, float]:
    """Parameters (millions) and forward GFLOPs per ``image_size`` x ``image_size`` image
    (ViT: ``vit_forward_flops``; XCiT: ``XCiT.forward_flops``)."""
    if isinstance(backbone, XCiT):
        flops = backbone.forward_flops(image_size, image_size)
    else:
        n_patches = (image_size // backbone.patch_size) ** 2
        n_tokens = 1 + backbone.num_register_tokens + n_patches
        flops = vit_forward_flops(backbone, n_tokens, n_patches)
    return {
        "params_m": sum(p.numel() for p in backbone.parameters()) / 1e6,
        "gflops_per_image": flops / 1e9,
    }


def images_per_s(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> float:
    """Throughput of ``fn`` on ``images`` (one warm-up call on a slice, then one timed call)."""
    with torch.no_grad():
        fn(images[:2])
        t0 = time.perf_counter()
        fn(images)
        dt = time.perf_counter() - t0
    return len(images) / dt if dt > 0 else float("inf")
