"""Stage ``students``: one student per name in ``distill.students``, from the frozen teacher.

``students`` (default: all of ``distill.students``) picks which students to build: each is
written to its own folder ``<paths.students_dir>/<name>/`` only, so building one student
(``sslops students --student NAME``, the DVC stage ``students@NAME``, one Dagster partition)
never touches another's files. Inside a folder every file is replaced by an atomic rename and
``lineage.json`` is written last: a folder without it is an unfinished build.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssl_core import sizing
from ssl_core.config import Params
from ssl_core.data.eval_set import load_eval_set
from ssl_core.eval.probe import make_knn_probe
from ssl_core.models.official import weights_file
from ssl_core.stages.common import StageRun
from ssl_core.stages.curate import CURATED
from ssl_core.train.distill import distill_student


def selected(params: Params, students: list[str] | None) -> list[str]:
    """The students to build: ``students`` (each must be in ``distill.students``) or all."""
    listed = list(params.distill.students)
    unknown = [s for s in students or () if s not in listed]
    if unknown:
        raise ValueError(f"student(s) {unknown} not in distill.students {listed} (params.yaml)")
    return list(dict.fromkeys(students)) if students else listed


def teacher_source(params: Params) -> Path:
    """``distill.teacher`` when set (a folder or an official-layout backbone file), else the
    teacher stage's output folder."""
    return Path(params.distill.teacher or params.paths.teacher_dir)


def run(params: Params, progress: bool = True, students: list[str] | None = None) -> dict:
    names = selected(params, students)
    cfg = params.distill
    st = StageRun("students", params, ("distill", "train"), seed=cfg.seed)
    curated_path = Path(params.paths.curated_dir) / CURATED
    teacher_dir = teacher_source(params)
    paths = pl.read_parquet(curated_path)["path"].to_list()
    cfg = sizing.resolve_epochs(cfg, len(paths), sizing.STUDENT_IMAGES, "distill")
    evset = load_eval_set(params)
    probe = (
        make_knn_probe(evset, params.train.image_size, temperature=params.eval.temperature)
        if evset
        else None
    )
    results = {}
    for name in names:
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
            {"curated": curated_path, "teacher": weights_file(teacher_dir)},
            results[name],
        )
    return results
