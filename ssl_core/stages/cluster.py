"""Stage ``clusters``: hierarchical k-means (torch GEMMs) over the deduplicated embeddings.

This is the one-rank path (``launch.clusters`` 1x1, the default), run in the calling process.
With more ranks the stage is a TorchX job running :mod:`ssl_core.launch.clusters_job`
(distributed k-means), which writes the same outputs through :func:`write_outputs`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from ssl_core import sizing
from ssl_core.config import Params
from ssl_core.curation.hkmeans import HKMeansResult, hierarchical_kmeans
from ssl_core.stages.common import StageRun
from ssl_core.utils.atomic import atomic_dir

ASSIGNMENTS = "assignments.parquet"


def level_col(level: int) -> str:
    return f"cluster_l{level}"


def inputs(params: Params) -> tuple[pl.DataFrame, Path, Path, list[int]]:
    """``(kept table, its path, embeddings path, resolved levels)`` of the stage."""
    kept_path = Path(params.paths.dedup_dir) / "kept.parquet"
    emb_path = Path(params.paths.embeddings_dir) / "pool.npy"
    kept = pl.read_parquet(kept_path)
    n = kept.height
    levels = sizing.resolve_levels(params.cluster.levels, n)
    if levels[0] > n:
        raise ValueError(
            f"cluster.levels[0] = {levels[0]} clusters but only {n} images survived "
            "dedup: lower cluster.levels in params.yaml (or set it to auto)"
        )
    return kept, kept_path, emb_path, levels


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.cluster
    st = StageRun("clusters", params, ("cluster",), seed=cfg.seed)
    kept, kept_path, emb_path, levels = inputs(params)
    res = hierarchical_kmeans(
        np.load(emb_path)[kept["emb_row"].to_numpy()],
        levels,
        n_iter=cfg.n_iter,
        n_resampling_steps=cfg.n_resampling_steps,
        max_points_per_centroid=cfg.max_points_per_centroid,
        resample_points_per_centroid=cfg.resample_points_per_centroid,
        tol=cfg.tol,
        seed=cfg.seed,
        checkpoint_dir=Path(params.paths.clusters_dir).parent / ".cache" / "hkmeans",
        progress=progress,
    )
    return write_outputs(st, params, (kept, kept_path, emb_path), res)


def write_outputs(
    st: StageRun,
    params: Params,
    sources: tuple[pl.DataFrame, Path, Path],
    res: HKMeansResult,
    extra: dict | None = None,
) -> dict:
    """Write the assignments table, per-level arrays and lineage of ``res`` (over the rows of
    the kept table, in its order); returns the stats (plus ``extra``)."""
    kept, kept_path, emb_path = sources
    levels = list(res.levels)
    ids = res.point_cluster_ids()  # (N, L)
    table = kept.select("path", "sha256", "emb_row").with_columns(
        *[pl.Series(level_col(lv), ids[:, lv], pl.Int64) for lv in range(len(levels))],
        pl.Series("dist_l0", res.distances[0].astype(np.float64)),
    )
    sizes = np.bincount(res.assignments[0], minlength=levels[0])
    stats = {
        "points": res.n_points,
        "levels": levels,
        "level0_size_min": int(sizes.min()),
        "level0_size_max": int(sizes.max()),
        "resumed_levels": list(res.resumed_levels),
        **(extra or {}),
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
