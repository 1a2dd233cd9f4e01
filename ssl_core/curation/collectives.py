"""The ``torch.distributed`` pieces of distributed k-means
(:mod:`ssl_core.curation.distributed_kmeans`): which rows a rank holds, the collectives on
numpy arrays (:class:`Comm`, a no-op on one rank) and the process group of a ``torchrun``
launch (:func:`process_group_from_env`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist

from ssl_core.utils.distributed import distributed_on

__all__ = ["Comm", "process_group_from_env", "shard_bounds"]


def shard_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` that rank ``rank`` of ``world`` holds (contiguous, sizes
    differ by at most one)."""
    return n * rank // world, n * (rank + 1) // world


class Comm:
    """The collectives this module needs, on numpy arrays; a no-op on one rank.

    Args:
        group: process group; None: the default group when one is initialised, else none
            (world size 1).
        local: ignore any process group (world size 1), e.g. for the upper levels.
    """

    def __init__(self, group: dist.ProcessGroup | None = None, local: bool = False) -> None:
        self.on = not local and distributed_on()
        self.group = group
        self.world = dist.get_world_size(group) if self.on else 1
        self.rank = dist.get_rank(group) if self.on else 0
        nccl = self.on and dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else None

    def _t(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.to(self.device) if self.device is not None else t.clone()

    def sum(self, a: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks."""
        if not self.on:
            return a
        t = self._t(a)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t.cpu().numpy()

    def all_gather(self, a: np.ndarray) -> np.ndarray:
        """``(world, *a.shape)``: every rank's ``a`` (same shape on all ranks)."""
        if not self.on:
            return a[None]
        t = self._t(a)
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t, group=self.group)
        return torch.stack(out).cpu().numpy()

    def gather_rows(self, a: np.ndarray, n_total: int, step: int = 2**22) -> np.ndarray:
        """Rank 0: the ranks' row slices (:func:`shard_bounds`) concatenated to ``n_total``
        rows; other ranks: their own ``a``. Sent ``step`` rows at a time (bounded buffers)."""
        if not self.on:
            return a
        sizes = [hi - lo for lo, hi in (shard_bounds(n_total, self.world, r)
                                        for r in range(self.world))]  # fmt: skip
        root = self.rank == 0
        out = [np.empty((s, *a.shape[1:]), dtype=a.dtype) for s in sizes] if root else []
        dst = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        for lo in range(0, max(sizes), step):
            block = np.zeros((min(step, max(sizes) - lo), *a.shape[1:]), dtype=a.dtype)
            mine = a[lo : lo + len(block)]
            block[: len(mine)] = mine
            t = self._t(block)
            bufs = [torch.empty_like(t) for _ in range(self.world)] if root else None
            dist.gather(t, bufs, dst=dst, group=self.group)
            for r, buf in enumerate(bufs or []):
                n = max(0, min(sizes[r] - lo, len(block)))
                out[r][lo : lo + n] = buf.cpu().numpy()[:n]
        return np.concatenate(out) if root else a


@contextmanager
def process_group_from_env(device: str = "cpu") -> Iterator[torch.device]:
    """Inside: the default process group of a ``torchrun`` launch (``WORLD_SIZE`` > 1), gloo
    for ``device="cpu"``, NCCL for ``"cuda"`` (one GPU per local rank); none on one rank.
    Yields the device this rank computes on; destroys the group it created on exit."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ValueError("launch.clusters asks for GPUs but torch sees none; set gpus: 0")
    dev = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if cuda
        else torch.device("cpu")
    )
    if cuda:
        torch.cuda.set_device(dev)
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo", device_id=dev if cuda else None)
    try:
        yield dev
    finally:
        if owns:
            dist.destroy_process_group()
