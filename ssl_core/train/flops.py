"""Model FLOPs of a ViT training step and bf16 peaks of known GPUs (for MFU).

A ViT forward over one image of n tokens (CLS + R registers + N patches), width D, depth L, FFN
hidden H, patch P, C channels::

    F_vit(n) = 2 N C P^2 D + L * (8 n D^2 + 4 n D H + 4 n^2 D)     (SwiGLU: 6 n D H)

and a head costs 2 * in * out per token over its Linear layers. Forward + backward = 3 x forward.
Used by ``benchmarks/train_step.py``; layer norms, softmax, losses and the optimiser are not
counted (< 1 %).
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_core.models.vit import VisionTransformer

__all__ = ["BF16_PEAK_TFLOPS", "device_peak_tflops", "head_flops_per_token", "vit_forward_flops"]

# Dense bf16 tensor-core peaks (no 2:4 sparsity), TFLOP/s, from the vendor data sheets.
BF16_PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.4,  # SXM (NVL: 835)
    "H100 SXM": 989.4,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,  # SXM and PCIe
}


def vit_forward_flops(vit: VisionTransformer, n_tokens: int, n_patches: int) -> float:
    """Forward FLOPs of the backbone on one image of ``n_tokens`` tokens (module docstring)."""
    c = vit.config
    d, h, p = c.embed_dim, c.hidden_dim, c.patch_size
    ffn = 6 * n_tokens * d * h if c.ffn_layer == "swiglu" else 4 * n_tokens * d * h
    per_layer = 8 * n_tokens * d * d + ffn + 4 * n_tokens * n_tokens * d
    return 2.0 * n_patches * c.in_chans * p * p * d + c.depth * per_layer


def head_flops_per_token(head: nn.Module) -> float:
    """2 * in * out summed over the head's Linear layers."""
    return float(sum(2 * m.in_features * m.out_features for m in head.modules()
                     if isinstance(m, nn.Linear)))  # fmt: skip


def device_peak_tflops(device: torch.device) -> float | None:
    """bf16 dense peak of a known CUDA device, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if all(part in name for part in key.split()):
            return BF16_PEAK_TFLOPS[key]
    if "H100" in name:
        return BF16_PEAK_TFLOPS["H100 SXM"]
    return None
