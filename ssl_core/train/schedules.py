"""Per-step schedules of the DINOv2 recipe (official ``CosineScheduler`` / ``build_schedulers``).

Each schedule is a float64 array with one value per optimisation step:

* lr: linear warm-up 0 → peak, then cosine peak → ``min_lr``;
* weight decay: cosine 0.04 → 0.2;
* EMA momentum: cosine 0.994 → 1.0;
* teacher temperature: linear warm-up 0.04 → 0.07, then constant;
* last layer (prototypes): lr multiplier 0 while frozen, then 1.

Arrays (not closures) make the value at step ``n`` a pure lookup, so resuming at ``n`` needs only
the step counter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Schedules", "build_schedules", "cosine_schedule", "linear_warmup_constant"]


def cosine_schedule(
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    start_warmup: float = 0.0,
    freeze_steps: int = 0,
) -> np.ndarray:
    """``freeze_steps`` zeros, linear ``start_warmup → base`` warm-up, then cosine ``base → final``.

    Args:
        base: Value at the end of the warm-up (start of the cosine).
        final: Value at the last step.
        total_steps: Length of the returned array.
        warmup_steps: Linear warm-up length (the warm-up excludes ``base``, as upstream).
        start_warmup: First warm-up value.
        freeze_steps: Leading zeros (before the warm-up).

    Returns:
        float64 array (total_steps,).
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    freeze_steps = min(freeze_steps, total_steps)
    warmup_steps = min(warmup_steps, total_steps - freeze_steps)
    cos_steps = total_steps - freeze_steps - warmup_steps
    freeze = np.zeros(freeze_steps)
    warm = np.linspace(start_warmup, base, warmup_steps, endpoint=False)
    t = np.arange(cos_steps)
    denom = max(cos_steps - 1, 1)
    cos = final + 0.5 * (base - final) * (1 + np.cos(math.pi * t / denom))
    return np.concatenate((freeze, warm, cos)).astype(np.float64)


def linear_warmup_constant(
    start: float, end: float, total_steps: int, warmup_steps: int
) -> np.ndarray:
    """Linear ``start → end`` over ``warmup_steps``, then ``end`` (teacher temperature)."""
    warmup_steps = min(warmup_steps, total_steps)
    warm = np.linspace(start, end, warmup_steps, endpoint=False)
    return np.concatenate((warm, np.full(total_steps - warmup_steps, end))).astype(np.float64)


@dataclass(frozen=True)
class Schedules:
    """All per-step schedules of one run; index with the global step."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    last_layer_lr_mult: np.ndarray

    @property
    def total_steps(self) -> int:
        return len(self.lr)

    def at(self, step: int) -> dict[str, float]:
        """Values at ``step`` (clamped to the last step)."""
        i = min(max(step, 0), self.total_steps - 1)
        return {
            "lr": float(self.lr[i]),
            "wd": float(self.weight_decay[i]),
            "momentum": float(self.momentum[i]),
            "teacher_temp": float(self.teacher_temp[i]),
            "last_layer_lr_mult": float(self.last_layer_lr_mult[i]),
        }


def build_schedules(cfg: object, steps_per_epoch: float, total_steps: int) -> Schedules:
    """Schedules for a ``TrainConfig`` / ``DistillConfig`` (duck-typed: same field names).

    Args:
        cfg: Config with ``lr, min_lr, warmup_epochs, weight_decay, weight_decay_end,
            momentum_teacher, momentum_teacher_final, teacher_temp, teacher_temp_final,
            teacher_temp_warmup_epochs, freeze_last_layer_epochs``.
        steps_per_epoch: Steps that count as one epoch for the epoch-based settings. Pass
            ``total_steps / cfg.epochs`` to compress the recipe into a ``max_steps``-capped run.
        total_steps: Length of every schedule.
    """
    c = cfg  # short alias; attributes in the paper's terms

    def ep(epochs: float) -> int:
        return int(round(epochs * steps_per_epoch))

    ones = np.ones(total_steps)
    frozen = min(ep(c.freeze_last_layer_epochs), total_steps)
    ones[:frozen] = 0.0
    return Schedules(
        lr=cosine_schedule(c.lr, c.min_lr, total_steps, warmup_steps=ep(c.warmup_epochs)),
        weight_decay=cosine_schedule(c.weight_decay, c.weight_decay_end, total_steps),
        momentum=cosine_schedule(c.momentum_teacher, c.momentum_teacher_final, total_steps),
        teacher_temp=linear_warmup_constant(
            c.teacher_temp, c.teacher_temp_final, total_steps, ep(c.teacher_temp_warmup_epochs)
        ),
        last_layer_lr_mult=ones,
    )
