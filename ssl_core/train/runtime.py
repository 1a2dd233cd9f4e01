"""Process-level setup of a training run: device, torchrun rank/world, threads, data order.

Single process, or under ``torchrun`` (``RANK``/``WORLD_SIZE`` set): gloo on CPU, nccl on CUDA.
Data order comes from (seed, epoch) through :class:`ResumableSampler`; augmentation, masks and
drop-path from a generator seeded with :func:`step_seed` (seed, rank, step), so a run resumed at
step n continues exactly as the uninterrupted run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from ssl_core.data.dataset import ImageDataset
from ssl_core.utils.malloc import keep_freed_memory

__all__ = ["ResumableSampler", "Runtime", "step_seed"]


@dataclass
class Runtime:
    """Process-level setup: device, distributed rank/world, threads."""

    device: torch.device
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, num_threads: int | None) -> Runtime:
        """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun); init the process group."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        if torch.cuda.is_available():
            device = torch.device("cuda", local % torch.cuda.device_count())
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            torch.set_num_threads(num_threads or max(1, cores // world))
            keep_freed_memory()  # large tensors reuse warm heap pages (ssl_core/utils/malloc.py)
        owns = False
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            owns = True
        return cls(device, rank, world, owns)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def all_max(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the per-step generator (augmentation, masks, drop-path)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (order from seed + epoch) that can start mid-epoch."""

    def __init__(
        self, dataset: ImageDataset, world: int, rank: int, seed: int, start: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
