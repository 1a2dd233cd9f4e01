"""The clusters stage inside its TorchX job: distributed hierarchical k-means on every rank.

``sslops clusters`` submits this (``python -m ssl_core.launch.job clusters`` under
``torchrun``) when ``launch.clusters`` asks for more than one rank; with one rank the stage
runs faiss k-means in the calling process (:mod:`ssl_core.stages.cluster`). Every rank
memory-maps the embeddings and reads its slice of the kept rows
(:mod:`ssl_core.curation.distributed_kmeans`); rank 0 gathers the assignments and writes the
same outputs, through the same code, as the one-rank path.
"""

from __future__ import annotations

import os

import numpy as np

from ssl_core.config import Params
from ssl_core.curation.collectives import process_group_from_env
from ssl_core.curation.distributed_kmeans import distributed_hierarchical_kmeans
from ssl_core.stages.cluster import inputs, write_outputs
from ssl_core.stages.common import StageRun


def run(params: Params, progress: bool = True) -> dict:
    """This rank's part of the clusters stage; the stats on rank 0, ``{}`` on the others."""
    cfg = params.cluster
    res_cfg = params.launch.clusters
    st = StageRun("clusters", params, ("cluster",), seed=cfg.seed)
    if cfg.resample_points_per_centroid:
        raise ValueError(
            "cluster.resample_points_per_centroid > 0 is not supported by distributed k-means "
            "(launch.clusters with more than one rank): set it to 0, or run clusters on one rank"
        )
    kept, kept_path, emb_path, levels = inputs(params)
    with process_group_from_env("cuda" if res_cfg.gpus > 0 else "cpu") as device:
        res = distributed_hierarchical_kmeans(
            np.load(emb_path, mmap_mode="r"),
            levels,
            rows=kept["emb_row"].to_numpy(),
            n_iter=cfg.n_iter,
            n_resampling_steps=cfg.n_resampling_steps,
            tol=cfg.tol,
            seed=cfg.seed,
            device=device,
            progress=progress,
        )
        world = int(os.environ.get("WORLD_SIZE", "1"))
    if int(os.environ.get("RANK", "0")) != 0:
        return {}  # rank 0 holds the gathered assignments and writes the outputs
    extra = {"kmeans": "distributed", "ranks": world}
    return write_outputs(st, params, (kept, kept_path, emb_path), res, extra)
