"""Model FLOPs of a ViT training step and bf16 peaks of known GPUs (for MFU).

A ViT forward over one image of n tokens (CLS + R registers + N patches), width D, depth L, FFN
hidden H, patch P, C channels::

    F_vit(n) = 2 N C P^2 D + L * (8 n D^2 + 4 n D H + 4 n^2 D)     (SwiGLU: 6 n D H)

and a head costs 2 * in * out per token over its Linear layers. Forward + backward = 3 x forward.
Used by ``benchmarks/train_step.py``; layer norms, softmax, losses and the optimiser are not
counted (< 1 %).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssl_core.models.vit import VisionTransformer

__all__ = [
    "BF16_PEAK_TFLOPS",
    "attention_flops",
    "device_peak_tflops",
    "head_flops_per_token",
    "vit_forward_flops",
]

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


def attention_flops(
    lengths: Sequence[int], dim: int, packed: str = "naive", block_size: int = 128
) -> float:
    """Forward FLOPs of one layer's attention matmuls over one packed row, per path.

    A row holds segments (images) of ``lengths`` tokens, S = sum(lengths); ``q k^T`` and
    ``attn v`` over an (m x n) score tile cost 4 m n D. Multiply by depth, the number of packed
    rows and 3 (forward + backward) for a training step.

    Args:
        lengths: Token counts of the row's segments, in packing order.
        dim: Token width D (all heads together).
        packed: ``"naive"`` (each segment alone: sum 4 l^2 D), ``"dense"`` (boolean-mask SDPA
            over the row: 4 S^2 D) or ``"flex"`` (block-sparse: the ``block_size`` x
            ``block_size`` tiles holding a same-segment pair, the tail tile clipped at S).
        block_size: BlockMask tile size (``"flex"`` only).

    Returns:
        FLOPs (float).
    """
    s = sum(lengths)
    if packed == "naive":
        return float(sum(4 * n * n * dim for n in lengths))
    if packed == "dense":
        return float(4 * s * s * dim)
    if packed != "flex":
        raise ValueError(f"packed must be 'naive', 'dense' or 'flex', got {packed!r}")
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    tiles = range(0, s, block_size)
    total = 0
    for q0 in tiles:
        for k0 in tiles:
            # a same-segment pair exists iff some segment overlaps both tiles
            if any(
                a < q0 + block_size and q0 < a + n and a < k0 + block_size and k0 < a + n
                for a, n in zip(starts, lengths, strict=True)
            ):
                total += min(block_size, s - q0) * min(block_size, s - k0)
    return float(4 * total * dim)


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
