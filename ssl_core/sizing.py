"""``auto`` sizes: cluster levels, curated size and training length from the pool's size.

A user's pool can hold 3,000 images or 3,000,000; the values tuned for the demo fit neither.
Every key below accepts ``auto`` in ``params.yaml`` (the default), resolved by the stage that
first knows the number it depends on, logged when it is resolved and recorded in the stage's
``lineage.json``. An explicit value always wins.

The rules are anchored on the demo, where they were measured (docs/curation.md: 7,438
deduplicated images, levels [200, 30], 3,000 curated, teacher 5 epochs, students 6), and on
the curation paper's shape (Vo et al. 2024: ~4 levels, each ~5-20x fewer clusters):

* ``cluster.levels``: level 0 has one cluster per ``POINTS_PER_CLUSTER`` deduplicated images;
  each next level has ``LEVEL_RATIO`` times fewer clusters, while a level keeps at least
  ``MIN_TOP_CLUSTERS`` clusters, up to ``MAX_LEVELS`` levels.
  (7,438 → [186, 27]; 3,700 → [92, 13]; 1e6 → [25000, 3571, 510, 73].)
* ``curate.target_size``: ``CURATED_FRACTION`` of the deduplicated images, at least
  ``MIN_CURATED`` (or the whole pool when it is smaller). (7,438 → 2,975; 3,700 → 1,480.)
* ``train.epochs`` / ``distill.epochs``: enough passes over the curated set to show the model
  ``TEACHER_IMAGES`` / ``STUDENT_IMAGES`` images (the demo's CPU budget: ~6 and ~5 minutes on
  2 cores), at least 1. (2,975 → 5 and 6; 1,480 → 10 and 12; 100k → 1 and 1.) The student's
  budget is what kept ≥ 95 % of the teacher's kNN on the demo
  (benchmarks/results/distill_targets.md).
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger("sslops")

AUTO = "auto"
POINTS_PER_CLUSTER = 40
LEVEL_RATIO = 7
MIN_TOP_CLUSTERS = 8
MAX_LEVELS = 4
CURATED_FRACTION = 0.4
MIN_CURATED = 1000
TEACHER_IMAGES = 15_000
STUDENT_IMAGES = 18_000  # 9,000 kept the demo student at 92 % of the teacher's kNN, 18,000: 99 %


def auto_levels(n_points: int) -> list[int]:
    """Cluster counts per level for ``n_points`` deduplicated images (strictly decreasing)."""
    if n_points < 2:
        raise ValueError(f"cannot cluster {n_points} image(s): the pool needs at least 2")
    k0 = min(max(2, round(n_points / POINTS_PER_CLUSTER)), n_points)
    levels = [k0]
    while len(levels) < MAX_LEVELS:
        nxt = round(levels[-1] / LEVEL_RATIO)
        if nxt < MIN_TOP_CLUSTERS:
            break
        levels.append(nxt)
    return levels


def auto_target_size(n_points: int) -> int:
    """Curated set size for ``n_points`` deduplicated images."""
    return min(n_points, max(MIN_CURATED, round(CURATED_FRACTION * n_points)))


def auto_epochs(n_images: int, images_to_see: int) -> int:
    """Passes over ``n_images`` that show the model about ``images_to_see`` images."""
    return max(1, math.ceil(images_to_see / max(n_images, 1) - 0.5))


def rules_text() -> str:
    """The rules in one paragraph, for logs and ``sslops use-folder``."""
    return (
        f"auto sizes: cluster levels = deduplicated images / {POINTS_PER_CLUSTER}, then / "
        f"{LEVEL_RATIO} per level while >= {MIN_TOP_CLUSTERS} clusters (<= {MAX_LEVELS} levels); "
        f"curated size = {CURATED_FRACTION:.0%} of them (>= {MIN_CURATED:,}); teacher epochs = "
        f"{TEACHER_IMAGES:,} / curated size, student epochs = {STUDENT_IMAGES:,} / curated size "
        "(>= 1). Set explicit values in params.yaml to override."
    )


def resolve_epochs(cfg: Any, n_images: int, images_to_see: int, section: str) -> Any:
    """``cfg`` (a recipe config) with ``epochs: auto`` replaced by :func:`auto_epochs`."""
    if cfg.epochs != AUTO:
        return cfg
    epochs = auto_epochs(n_images, images_to_see)
    log.info(
        "%s.epochs: auto -> %d (%d curated images, about %d images to see)",
        section,
        epochs,
        n_images,
        images_to_see,
    )
    return cfg.model_copy(update={"epochs": epochs})


def resolve_levels(value: list[int] | str, n_points: int) -> list[int]:
    """``cluster.levels`` as set, or :func:`auto_levels` (logged) when it is ``auto``."""
    if value != AUTO:
        return list(value)
    levels = auto_levels(n_points)
    log.info("cluster.levels: auto -> %s (%d deduplicated images)", levels, n_points)
    return levels


def resolve_target_size(value: int | str, n_points: int) -> int:
    """``curate.target_size`` as set, or :func:`auto_target_size` (logged) when ``auto``."""
    if value != AUTO:
        return int(value)
    size = auto_target_size(n_points)
    log.info("curate.target_size: auto -> %d (%d deduplicated images)", size, n_points)
    return size
