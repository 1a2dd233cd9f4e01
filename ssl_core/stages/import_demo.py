"""Stage ``import-demo``: Fashion-MNIST → long-tailed raw pool + balanced eval set."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ssl_core.config import Params
from ssl_core.data.demo_pool import build_demo
from ssl_core.stages.common import StageRun
from ssl_core.utils.atomic import atomic_dir


def run(params: Params, progress: bool = True) -> dict:
    st = StageRun("import_demo", params, ("demo",), seed=params.demo.seed)
    pool, eval_dir = Path(params.paths.pool), Path(params.paths.eval_dir)
    with atomic_dir(pool) as tmp_pool, atomic_dir(eval_dir) as tmp_eval:
        summary = build_demo(params.demo, tmp_pool, tmp_eval, progress=progress)
        st.lineage(tmp_eval, {"source": params.demo.source_dir}, asdict(summary))
    return asdict(summary)
