"""Stage ``embed``: unique ``ok`` pool images and eval images → embedding matrices + ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ssl_core.config import Params
from ssl_core.curation.embed import embed_paths, make_embedder
from ssl_core.data.demo_pool import EVAL_LABELS
from ssl_core.stages.common import StageRun
from ssl_core.stages.ingest import MANIFEST
from ssl_core.utils.atomic import atomic_dir


def load_eval_labels(eval_dir: str | Path) -> pl.DataFrame:
    path = Path(eval_dir) / EVAL_LABELS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the eval set is a folder with images and {EVAL_LABELS} "
            "(columns path, label, split in {bank, query}); `sslops import-demo` builds one"
        )
    return pl.read_parquet(path)


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.embed
    st = StageRun("embed", params, ("embed",), seed=cfg.seed)
    manifest_path = Path(params.paths.manifest_dir) / MANIFEST
    manifest = pl.read_parquet(manifest_path)
    pool_rows = manifest.filter((pl.col("status") == "ok") & pl.col("duplicate_of").is_null())
    eval_rows = load_eval_labels(params.paths.eval_dir)
    embedder = make_embedder(cfg.model, cfg.image_size, seed=cfg.seed)

    pool_emb, pool_ok = embed_paths(
        params.paths.pool, pool_rows["path"].to_list(), embedder, cfg.batch_size, progress, "embed pool"
    )
    eval_emb, eval_ok = embed_paths(
        params.paths.eval_dir, eval_rows["path"].to_list(), embedder, cfg.batch_size, progress, "embed eval"
    )
    stats = {
        "model": embedder.name,
        "dim": int(pool_emb.shape[1]),
        "pool_embedded": int(pool_ok.sum()),
        "pool_failed": int((~pool_ok).sum()),
        "eval_embedded": int(eval_ok.sum()),
    }
    with atomic_dir(params.paths.embeddings_dir) as tmp:
        np.save(tmp / "pool.npy", pool_emb[pool_ok])
        pool_rows.filter(pl.Series(pool_ok)).select("path", "sha256").write_parquet(tmp / "pool_ids.parquet")
        np.save(tmp / "eval.npy", eval_emb[eval_ok])
        eval_rows.filter(pl.Series(eval_ok)).write_parquet(tmp / "eval_ids.parquet")
        if (~pool_ok).any():
            pool_rows.filter(~pl.Series(pool_ok)).select("path", "sha256").with_columns(
                pl.lit("decode_failed_at_embed").alias("reason")
            ).write_parquet(tmp / "failed.parquet")
        st.lineage(tmp, {"manifest": manifest_path, "eval_labels": Path(params.paths.eval_dir) / EVAL_LABELS}, stats)
    return stats
