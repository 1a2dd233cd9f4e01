"""Collapse detection: fail a run early, with the reason, instead of training a dead model."""

from __future__ import annotations

import math
from collections.abc import Callable

# Per-sample teacher entropy / log K above which the teacher counts as uniform. Not lower: on
# the CPU demo the head sits at 0.95-0.99 of log K for whole runs (near-uniform prototypes, see
# docs/training.md) while the backbone keeps improving through iBOT / KoLeo, so kNN still climbs
# (benchmarks/results/teacher_head_probes.md); only a head that has gone fully uniform fails.
UNIFORM_RATIO = 0.995


class CollapseError(RuntimeError):
    """Training diverged (non-finite loss) or collapsed (constant or degenerate teacher)."""


class CollapseMonitor:
    """Counts consecutive degenerate steps after a grace period; raises :class:`CollapseError`.

    A step is degenerate when the student's CLS features are constant (``feature_std``), the
    teacher's per-image distribution is uniform (entropy > 99.5 % of log K) or all images pick one
    prototype (marginal entropy < 2 % of log K). A non-finite loss fails at once. Under DDP the
    flags are agreed across ranks with ``all_max`` so every rank stops at the same step.
    """

    def __init__(
        self, grace: int, patience: int, all_max: Callable[[list[float]], list[float]]
    ) -> None:
        self.grace, self.patience, self.all_max = grace, patience, all_max
        self.bad_run = 0

    def update(self, step: int, m: dict[str, float]) -> None:
        nonfinite = not math.isfinite(m["loss"])
        degenerate = step >= self.grace and (
            m["feature_std"] < 1e-6
            or ("log_k" in m and m["teacher_entropy"] > UNIFORM_RATIO * m["log_k"])
            or ("log_k" in m and m["teacher_marginal_entropy"] < 0.02 * m["log_k"])
        )
        nonfinite_any, degenerate_any = self.all_max([float(nonfinite), float(degenerate)])
        if nonfinite_any:
            raise CollapseError(f"non-finite loss at step {step}: {m}")
        self.bad_run = self.bad_run + 1 if degenerate_any else 0
        if self.bad_run >= self.patience:
            entropies = (
                f", entropy {m['teacher_entropy']:.3f} / log K {m['log_k']:.3f}, marginal "
                f"entropy {m['teacher_marginal_entropy']:.3f}"
                if "log_k" in m
                else ""
            )
            raise CollapseError(
                f"collapse: teacher degenerate for {self.bad_run} consecutive steps (feature std "
                f"{m['feature_std']:.2e}{entropies}); try a lower lr, a longer warm-up or a "
                "lower teacher temperature"
            )
