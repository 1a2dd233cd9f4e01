"""Stage ``teacher``: DINOv2-style pretraining on the curated dataset."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssl_core import sizing
from ssl_core.config import Params
from ssl_core.data.eval_set import load_eval_set
from ssl_core.eval.probe import make_knn_probe
from ssl_core.stages.common import StageRun
from ssl_core.stages.curate import CURATED
from ssl_core.train.teacher import train_teacher


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.train
    st = StageRun("teacher", params, ("train",), seed=cfg.seed)
    curated_path = Path(params.paths.curated_dir) / CURATED
    paths = pl.read_parquet(curated_path)["path"].to_list()
    cfg = sizing.resolve_epochs(cfg, len(paths), sizing.TEACHER_IMAGES, "train")
    evset = load_eval_set(params)
    out = Path(params.paths.teacher_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = train_teacher(
        cfg,
        Path(params.paths.pool),
        paths,
        out,
        knn_probe=make_knn_probe(evset, cfg.image_size, temperature=params.eval.temperature)
        if evset
        else None,
        chance=1.0 / evset.n_classes if evset else 0.0,
        resume=True,
        progress=progress,
    )
    st.lineage(out, {"curated": curated_path}, summary)
    return summary
