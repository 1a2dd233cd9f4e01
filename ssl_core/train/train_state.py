"""The run's own state: where it is in the data and what the summary needs after a resume.

It is the ``train_state`` part of a checkpoint (:mod:`ssl_core.train.checkpoint`), next to the
model, optimiser, loss buffers and RNG parts. Together with the data order, a pure function of
(seed, epoch) (:class:`ssl_core.train.runtime.ResumableSampler`), ``epoch`` and ``batch`` are
the dataloader position: a resumed run skips the ``batch`` batches of ``epoch`` it has consumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """Position and counters of a training run (checkpointed, restored on resume)."""

    step: int = 0
    """Optimisation steps done."""
    epoch: int = 0
    """Epoch being read."""
    batch: int = 0
    """Batches of ``epoch`` consumed (including skipped ones): the dataloader position."""
    n_bad: int = 0
    """Unreadable files skipped so far."""
    images: int = 0
    """Images trained on so far, all ranks."""
    wall_s: float = 0.0
    """Wall-clock seconds of the run, summed over its sessions (as of the last checkpoint)."""
    recent_losses: list[float] = field(default_factory=list)
    """Losses of the last ``log_every`` steps (the summary's ``final_loss``)."""
    last: dict[str, float] = field(default_factory=dict)
    """The last step's metrics record (the summary's last-step loss and entropies)."""

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint part: a plain dict (loads with ``torch.load(weights_only=True)``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, sd: dict[str, Any]) -> TrainState:
        """Inverse of :meth:`state_dict`; fields absent from ``sd`` keep their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in sd.items() if k in names})
