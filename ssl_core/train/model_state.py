"""Where the model's tensors live during a run, behind one interface for the training loop.

:class:`ReplicatedState` (one process, or DDP: every rank holds full tensors) and
:class:`ssl_core.train.fsdp.FSDPState` (sharded) both offer ``full_model_state``,
``full_optimizer_state``, ``load`` (from a checkpoint's parts), ``gathered_ema`` (the full EMA
network on rank 0) and the ``optimizer_format`` written into checkpoints, so ``fit`` never asks
which one it has.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ssl_core.train.fsdp import FSDPState
from ssl_core.train.ssl_model import SSLModel, SSLNet

__all__ = ["ModelState", "ReplicatedState", "make_model_state"]


class ReplicatedState:
    """Full tensors on every rank (single process or DDP)."""

    optimizer_format = "torch"  # optimizer.state_dict(): parameters by position

    def __init__(self, model: SSLModel) -> None:
        self.model = model

    def full_model_state(self) -> dict[str, Tensor]:
        return self.model.trainable_state_dict()

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load(self, model_sd: dict[str, Tensor], optim_sd: dict[str, Any], optimizer) -> None:
        """Raises ValueError when the checkpoint's model keys do not match this model."""
        missing, unexpected = self.model.load_state_dict(model_sd, strict=False)
        if unexpected or any(not k.startswith("teacher.") for k in missing):
            raise ValueError(f"model keys do not match ({missing[:3]}, {unexpected[:3]})")
        optimizer.load_state_dict(optim_sd)

    def gathered_ema(self) -> SSLNet:
        return self.model.ema


ModelState = ReplicatedState | FSDPState


def make_model_state(
    parallelism: str, model: SSLModel, device: torch.device, world: int, is_main: bool
) -> ModelState:
    """FSDP shards ``model`` in place (before an optimizer sees its parameters)."""
    if parallelism == "fsdp":
        return FSDPState(model, device, world, is_main)
    return ReplicatedState(model)
