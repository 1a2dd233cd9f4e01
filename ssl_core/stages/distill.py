"""Stage ``distill``: one student per name in ``distill.students``, from the frozen teacher."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssl_core import sizing
from ssl_core.config import Params
from ssl_core.data.eval_set import load_eval_set
from ssl_core.eval.probe import make_knn_probe
from ssl_core.stages.common import StageRun
from ssl_core.stages.curate import CURATED
from ssl_core.train.distill import distill_student


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.distill
    st = StageRun("distill", params, ("distill", "train"), seed=cfg.seed)
    curated_path = Path(params.paths.curated_dir) / CURATED
    teacher_dir = Path(params.paths.teacher_dir)
    paths = pl.read_parquet(curated_path)["path"].to_list()
    cfg = sizing.resolve_epochs(cfg, len(paths), sizing.STUDENT_IMAGES, "distill")
    evset = load_eval_set(params)
    probe = (
        make_knn_probe(evset, params.train.image_size, temperature=params.eval.temperature)
        if evset
        else None
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
            chance=1.0 / evset.n_classes if evset else 0.0,
            resume=True,
            progress=progress,
        )
        st.lineage(
            out,
            {"curated": curated_path, "teacher": teacher_dir / "model.safetensors"},
            results[name],
        )
    return results
