"""Stage ``curated``: balanced hierarchical sampling to ``curate.target_size`` images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ssl_core import sizing
from ssl_core.config import Params
from ssl_core.curation.sampling import balanced_sample, find_cap
from ssl_core.stages.cluster import ASSIGNMENTS, level_col, resolved_levels
from ssl_core.stages.common import StageRun
from ssl_core.utils.atomic import atomic_dir
from ssl_core.utils.failpoints import failpoint

CURATED = "curated_manifest.parquet"


def normalised_entropy(counts: np.ndarray) -> float:
    """Shannon entropy of a count vector divided by log(#bins): 1 = perfectly uniform."""
    counts = counts[counts > 0]
    if len(counts) <= 1:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(counts)))


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.curate
    st = StageRun("curated", params, ("curate", "cluster"), seed=cfg.seed)
    cdir = Path(params.paths.clusters_dir)
    table = pl.read_parquet(cdir / ASSIGNMENTS)
    levels = resolved_levels(params)
    n_levels = len(levels)
    target = sizing.resolve_target_size(cfg.target_size, table.height)
    if target > table.height:
        raise ValueError(
            f"curate.target_size = {target} but only {table.height} images survived "
            "dedup: lower curate.target_size in params.yaml, set it to auto, or add images"
        )
    assignments = [np.load(cdir / f"assign_l{lv}.npy") for lv in range(n_levels)]
    sel = balanced_sample(
        assignments,
        target,
        strategy=cfg.strategy,
        seed=cfg.seed,
        distances=table["dist_l0"].to_numpy(),
    )
    curated = table[sel]
    top = level_col(n_levels - 1)
    top_sizes = np.bincount(table[top].to_numpy(), minlength=levels[-1])
    got = np.bincount(curated[top].to_numpy(), minlength=levels[-1])
    stats = {
        "selected": curated.height,
        "target_size": target,
        "levels": levels,
        "top_level_cap": int(find_cap(top_sizes, target)),
        "top_level_max_count": int(got.max()),
        "top_level_entropy_before": normalised_entropy(top_sizes),
        "top_level_entropy_after": normalised_entropy(got),
    }
    with atomic_dir(params.paths.curated_dir) as tmp:
        curated.write_parquet(tmp / CURATED)
        st.lineage(tmp, {"assignments": cdir / ASSIGNMENTS}, stats)
        failpoint("curate.before_swap")
    return stats
