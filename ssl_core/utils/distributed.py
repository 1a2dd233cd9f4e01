"""Whether this process runs under ``torch.distributed`` (one check for every module)."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["distributed_on"]


def distributed_on() -> bool:
    """True when a default process group is initialised (torchrun with DDP/FSDP, gloo or NCCL)."""
    return dist.is_available() and dist.is_initialized()
