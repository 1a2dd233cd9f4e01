"""Stage ``distill``: one student per name in ``distill.students``, from the frozen teacher."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssl_core.config import Params
from ssl_core.eval.probe import make_knn_probe, n_classes
from ssl_core.stages.common import StageRun
from ssl_core.stages.curate import CURATED
from ssl_core.train.distill import distill_student


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.distill
    st = StageRun("distill", params, ("distill", "train"), seed=cfg.seed)
    curated_path = Path(params.paths.curated_dir) / CURATED
    teacher_dir = Path(params.paths.teacher_dir)
    paths = pl.read_parquet(curated_path)["path"].to_list()
    probe = make_knn_probe(
        params.paths.eval_dir, params.train.image_size, temperature=params.eval.temperature
    )
    results = {}
    for name in cfg.students:
        out = Path(params.paths.students_dir) / name
        out.mkdir(parents=True, exist_ok=True)
        results[name] = distill_student(
            cfg,
            name,
            teacher_dir,
            Path(params.paths.pool),
            paths,
            out,
            knn_probe=probe,
            chance=1.0 / n_classes(params.paths.eval_dir),
            resume=True,
            progress=progress,
        )
        st.lineage(
            out,
            {"curated": curated_path, "teacher": teacher_dir / "model.safetensors"},
            results[name],
        )
    return results
