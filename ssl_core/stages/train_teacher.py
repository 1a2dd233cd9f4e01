"""Stage ``train-teacher``: DINOv2-style pretraining on the curated dataset."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssl_core.config import Params
from ssl_core.eval.probe import make_knn_probe, n_classes
from ssl_core.stages.common import StageRun
from ssl_core.stages.curate import CURATED
from ssl_core.train.teacher import train_teacher


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.train
    st = StageRun("train_teacher", params, ("train",), seed=cfg.seed)
    curated_path = Path(params.paths.curated_dir) / CURATED
    paths = pl.read_parquet(curated_path)["path"].to_list()
    out = Path(params.paths.teacher_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = train_teacher(
        cfg,
        Path(params.paths.pool),
        paths,
        out,
        knn_probe=make_knn_probe(
            params.paths.eval_dir, cfg.image_size, temperature=params.eval.temperature
        ),
        chance=1.0 / n_classes(params.paths.eval_dir),
        resume=True,
        progress=progress,
    )
    st.lineage(out, {"curated": curated_path}, summary)
    return summary
