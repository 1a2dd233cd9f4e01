"""Stage ``clusters``: hierarchical k-means (faiss) over the deduplicated embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from ssl_core import sizing
from ssl_core.config import Params
from ssl_core.curation.hkmeans import hierarchical_kmeans
from ssl_core.stages.common import StageRun
from ssl_core.utils.atomic import atomic_dir

ASSIGNMENTS = "assignments.parquet"


def level_col(level: int) -> str:
    return f"cluster_l{level}"


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.cluster
    st = StageRun("clusters", params, ("cluster",), seed=cfg.seed)
    kept_path = Path(params.paths.dedup_dir) / "kept.parquet"
    emb_path = Path(params.paths.embeddings_dir) / "pool.npy"
    kept = pl.read_parquet(kept_path)
    x = np.load(emb_path)[kept["emb_row"].to_numpy()]
    levels = sizing.resolve_levels(cfg.levels, len(x))
    if levels[0] > len(x):
        raise ValueError(
            f"cluster.levels[0] = {levels[0]} clusters but only {len(x)} images survived "
            "dedup: lower cluster.levels in params.yaml (or set it to auto)"
        )
    res = hierarchical_kmeans(
        x,
        levels,
        n_iter=cfg.n_iter,
        n_resampling_steps=cfg.n_resampling_steps,
        max_points_per_centroid=cfg.max_points_per_centroid,
        tol=cfg.tol,
        seed=cfg.seed,
        checkpoint_dir=Path(params.paths.clusters_dir).parent / ".cache" / "hkmeans",
        progress=progress,
    )
    ids = res.point_cluster_ids()  # (N, L)
    table = kept.select("path", "sha256", "emb_row").with_columns(
        *[pl.Series(level_col(lv), ids[:, lv], pl.Int64) for lv in range(len(levels))],
        pl.Series("dist_l0", res.distances[0].astype(np.float64)),
    )
    sizes = np.bincount(res.assignments[0], minlength=levels[0])
    stats = {
        "points": len(x),
        "levels": levels,
        "level0_size_min": int(sizes.min()),
        "level0_size_max": int(sizes.max()),
        "resumed_levels": list(res.resumed_levels),
    }
    with atomic_dir(params.paths.clusters_dir) as tmp:
        table.write_parquet(tmp / ASSIGNMENTS)
        for lv, (c, a) in enumerate(zip(res.centroids, res.assignments, strict=True)):
            np.save(tmp / f"centroids_l{lv}.npy", c)
            np.save(tmp / f"assign_l{lv}.npy", a)
        st.lineage(tmp, {"kept": kept_path, "embeddings": emb_path}, stats)
    return stats


def resolved_levels(params: Params) -> list[int]:
    """The cluster counts the cluster stage used (``auto`` resolved), from its lineage."""
    lin = json.loads((Path(params.paths.clusters_dir) / "lineage.json").read_text())
    return list(lin["stats"]["levels"])
