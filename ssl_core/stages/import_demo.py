"""Stage ``raw_pool`` (demo data): Fashion-MNIST → long-tailed raw pool + balanced eval set.

Writes only the demo's own folders (``data/demo/pool``, ``data/demo/eval``) and refuses to run
unless ``data.source`` is ``demo``: a user's pool is never an output of this (or any) stage.
"""

from __future__ import annotations

from dataclasses import asdict

from ssl_core.config import DEMO_LABELS, DEMO_POOL, ConfigError, Params
from ssl_core.data.demo_pool import build_demo
from ssl_core.stages.common import StageRun
from ssl_core.utils.atomic import atomic_dir


def run(params: Params, progress: bool = True) -> dict:
    if params.data.source != "demo":
        raise ConfigError(
            f"raw_pool builds the demo data, but data.source is {params.data.source!r}: "
            "nothing to do (your pool at paths.pool is only ever read)"
        )
    st = StageRun("raw_pool", params, ("demo",), seed=params.demo.seed)
    with atomic_dir(DEMO_POOL) as tmp_pool, atomic_dir(DEMO_LABELS) as tmp_eval:
        summary = build_demo(params.demo, tmp_pool, tmp_eval, progress=progress)
        st.lineage(tmp_eval, {"source": params.demo.source_dir}, asdict(summary))
    return asdict(summary)
