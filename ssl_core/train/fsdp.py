"""Fully sharded data parallel (FSDP2, ``torch.distributed.fsdp.fully_shard``) for big presets.

Under ``torchrun`` the student *and* its EMA copy are sharded the same way (one unit per
transformer block, one per head, the rest in the root unit), so the EMA update stays a
shard-local ``lerp`` and no rank ever holds a full copy of either during training. Checkpoints
hold the full (gathered) tensors in exactly the layout of the single-process / DDP trainer
(``student.*``, ``ema.*``), so a run can be resumed under another world size or parallelism.

Gathering is collective: every rank calls :func:`full_model_state`; rank 0 gets the tensors
(on CPU), the other ranks an empty dict. Rank 0 keeps an unsharded copy of the EMA network to
export it and to run the kNN probe without further collectives.

Chosen by ``distributed: auto`` (FSDP from :data:`FSDP_MIN_PARAMS` parameters, i.e. the
``large`` and ``giant`` presets, DDP below) or forced with ``distributed: fsdp``. Tested with
2 CPU processes (gloo); the CUDA/nccl path is the same code with a CUDA device mesh.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

from ssl_core.train.ssl_model import SSLModel, SSLNet

__all__ = ["FSDP_MIN_PARAMS", "FSDPState", "resolve_parallelism"]

FSDP_MIN_PARAMS = 200_000_000  # ViT-L/14 (304 M) and ViT-g/14 (1.1 B) shard; S and B replicate
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
_LOAD = StateDictOptions(full_state_dict=True)


def resolve_parallelism(setting: str, world: int, n_params: int) -> str:
    """``single`` (one process), ``ddp`` or ``fsdp`` for a ``distributed`` setting."""
    if world == 1:
        return "single"
    if setting == "auto":
        return "fsdp" if n_params >= FSDP_MIN_PARAMS else "ddp"
    return setting


def _shard_net(net: SSLNet, mesh: Any) -> None:
    for blk in net.backbone.blocks:
        fully_shard(blk, mesh=mesh)
    for head in (net.dino_head, net.ibot_head, net.feature_proj):
        if head is not None:
            fully_shard(head, mesh=mesh)
    fully_shard(net, mesh=mesh)


class FSDPState:
    """Shards ``model.student`` and ``model.ema`` in place; gathers / scatters full states."""

    optimizer_format = "fqn"  # get_optimizer_state_dict: parameters by name

    def __init__(self, model: SSLModel, device: torch.device, world: int, is_main: bool) -> None:
        # rank 0's unsharded EMA twin: exported model and kNN probe, no collectives needed
        self.plain_ema: SSLNet | None = copy.deepcopy(model.ema).cpu() if is_main else None
        mesh = init_device_mesh(device.type, (world,))
        _shard_net(model.student, mesh)
        _shard_net(model.ema, mesh)
        register_fsdp_forward_method(model.ema, "teacher_forward")
        self.model = model

    def full_model_state(self) -> dict[str, Tensor]:
        """Collective: ``student.*`` + ``ema.*`` full tensors on rank 0, ``{}`` elsewhere."""
        out: dict[str, Tensor] = {}
        for name in ("student", "ema"):
            sd = get_model_state_dict(getattr(self.model, name), options=_FULL)
            out.update({f"{name}.{k}": v for k, v in sd.items()})
        return out

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Collective: optimizer state keyed by parameter names (full tensors on rank 0)."""
        return get_optimizer_state_dict(self.model.student, optimizer, options=_FULL)

    def load(self, model_sd: dict[str, Tensor], optim_sd: dict[str, Any], optimizer) -> None:
        """Collective: every rank passes the full checkpoint; each keeps its own shards."""
        for name in ("student", "ema"):
            prefix = f"{name}."
            sub = {k[len(prefix) :]: v for k, v in model_sd.items() if k.startswith(prefix)}
            set_model_state_dict(getattr(self.model, name), sub, options=_LOAD)
        set_optimizer_state_dict(self.model.student, optimizer, optim_sd, options=_LOAD)

    def gathered_ema(self) -> SSLNet | None:
        """Collective: rank 0's unsharded EMA network with the current weights."""
        sd = get_model_state_dict(self.model.ema, options=_FULL)
        if self.plain_ema is None:
            return None
        self.plain_ema.load_state_dict(sd)
        return self.plain_ema
