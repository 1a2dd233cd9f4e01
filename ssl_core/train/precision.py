"""Compute precision of the training forwards (``train.precision`` / ``distill.precision``).

DINOv2 trains in mixed precision (the official configs run the backbone and heads in fp16 with
fp32 master weights and fp32 reductions). Here the forwards run under ``torch.autocast`` in
bfloat16 (same exponent range as fp32, so no loss scaling) where the hardware multiplies bf16
matrices natively; parameters, optimiser state, gradients' accumulation, losses, Sinkhorn-Knopp
and the EMA stay fp32 (the loss modules cast their inputs with ``.float()``).

* ``auto`` (default): bf16 on a CUDA GPU that supports it and on a CPU with AMX or AVX512-BF16
  units (Intel Sapphire Rapids and later, AMD Zen 4 and later), fp32 elsewhere. On this
  project's 2-core Sapphire Rapids machines a 2048^2 bf16 GEMM runs at ~1.9 TFLOP/s against
  ~0.24 TFLOP/s in fp32, and a ViT-S/14 step is 1.3-1.4x faster, the demo's 1.3x
  (benchmarks/results/train_profile.md, train_throughput.md).
* ``bf16``: always (emulated, slow, on CPUs without bf16 units).
* ``fp32``: never; bit-for-bit the pre-autocast numerics.

The resolved value is written to the run's ``summary.json`` (``precision``).
"""

from __future__ import annotations

import contextlib
import functools

import torch

__all__ = ["PRECISIONS", "autocast", "native_bf16", "resolve_precision"]

PRECISIONS = ("auto", "bf16", "fp32")


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu", "cuda", ...) multiplies bf16 matrices in hardware."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        cpu = torch.cpu
        return torch.backends.mkldnn.is_available() and (
            cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported()
        )
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` where :func:`native_bf16`, else ``fp32``; other values as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device.type) else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``precision`` resolves to ``bf16``, else nothing."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
