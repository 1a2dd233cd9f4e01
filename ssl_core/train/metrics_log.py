"""What a training run reports while it runs: ``metrics.jsonl`` lines and its throughput."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssl_core.train.outputs import rewrite_metrics

__all__ = ["MetricsLog", "Throughput"]


class MetricsLog:
    """``metrics.jsonl``: one line per ``log_every`` steps (the mean of the steps' records) and
    one per kNN probe. Only the main rank writes; every rank keeps the same window."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        self.window: list[dict[str, float]] = []

    def start(self, resumed_from: int | None) -> None:
        """A fresh run starts an empty file; a resumed one drops the lines past its checkpoint."""
        if not self.enabled:
            return
        if resumed_from is None:
            self.path.unlink(missing_ok=True)
        else:
            rewrite_metrics(self.path, resumed_from)

    def add(self, rec: dict[str, float], step: int, epoch: int, flush: bool) -> None:
        """Add one step's record; when ``flush``, write the window's mean as the line of ``step``.

        Every key of ``rec`` but ``step`` is averaged; ``step`` and ``epoch`` are written as
        integers (``epoch`` keeps its place in the key order).
        """
        self.window.append(rec)
        if not flush:
            return
        if self.enabled:
            mean = {k: float(np.mean([r[k] for r in self.window])) for k in rec if k != "step"}
            self._append({**mean, "step": step, "epoch": epoch})
        self.window = []

    def knn(self, step: int, acc: float) -> None:
        """A point of the kNN curve."""
        if self.enabled:
            self._append({"step": step, "knn_top1": acc})

    def _append(self, line: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")


@dataclass
class Throughput:
    """Wall clock of this session (added to the run's earlier sessions) and images/s of the
    timed steps (the first step of a fresh run pays one-off costs and is left out)."""

    wall_before: float = 0.0
    """Wall-clock seconds of the earlier sessions (from the checkpoint)."""
    t_start: float = field(default_factory=time.perf_counter)
    images: int = 0
    seconds: float = 0.0

    def add(self, n_images: int, seconds: float) -> None:
        self.images, self.seconds = self.images + n_images, self.seconds + seconds

    def wall_s(self) -> float:
        """Wall-clock seconds of the run so far, all sessions."""
        return self.wall_before + time.perf_counter() - self.t_start

    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0
