"""Stage ``embeddings``: unique ``ok`` pool images and eval images → embedding matrices + ids.

Embeddings come from a persistent cache keyed by (image sha256, model hash) under
``<embeddings_dir parent>/.cache/embeddings/<model_hash>/`` (outside the DVC-tracked output):
only images not cached yet are embedded, streamed into shards of ``embed.shard_size``; a crash
loses at most the shard being filled. The outputs (``pool.npy`` float32 + ``pool_ids.parquet``,
``eval.npy`` + ``eval_ids.parquet``) are then assembled in manifest / label-file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ssl_core.config import Params
from ssl_core.curation.embed import make_embedder, model_hash
from ssl_core.curation.embed_cache import EmbeddingCache, embed_with_cache
from ssl_core.data.eval_set import EVAL_SET, load_eval_set, training_candidates
from ssl_core.stages.common import StageRun
from ssl_core.stages.ingest import MANIFEST
from ssl_core.utils.atomic import atomic_dir, write_json


def cache_root(params: Params) -> Path:
    """Where the embedding cache lives: next to, not inside, the DVC-tracked output."""
    return Path(params.paths.embeddings_dir).parent / ".cache" / "embeddings"


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.embed
    st = StageRun("embeddings", params, ("embed",), seed=cfg.seed)
    manifest_path = Path(params.paths.manifest_dir) / MANIFEST
    manifest = pl.read_parquet(manifest_path)
    evset = load_eval_set(params)
    # eval images drawn from the pool never train a model
    pool_rows = training_candidates(params, manifest, evset)
    pool_rows = pool_rows.filter(pl.col("duplicate_of").is_null())
    eval_rows = evset.table if evset is not None else None
    embedder = make_embedder(cfg.model, cfg.image_size, seed=cfg.seed)
    mhash = model_hash(embedder)
    cache = EmbeddingCache(cache_root(params), mhash)
    write_json(cache.dir / "model.json", {"name": embedder.name, **embedder.fingerprint})

    common = dict(shard_size=cfg.shard_size, batch_size=cfg.batch_size, progress=progress)
    with cache.lock():
        pool = embed_with_cache(
            cache,
            params.paths.pool,
            pool_rows["path"].to_list(),
            pool_rows["sha256"].to_list(),
            embedder,
            desc="embed pool",
            **common,
        )
        ev = None
        if eval_rows is not None:
            ev = embed_with_cache(
                cache,
                evset.root,
                eval_rows["path"].to_list(),
                eval_rows["sha256"].to_list(),
                embedder,
                desc="embed eval",
                **common,
            )
        n_shards = cache.n_shards
    pool_ok = pool.ok
    if ev is None:  # no labels: an empty eval matrix keeps every later reader simple
        eval_rows = pl.DataFrame(schema={"path": pl.String, "label": pl.Int64, "sha256": pl.String})
        eval_emb, eval_ok = np.zeros((0, pool.emb.shape[1]), np.float32), np.zeros(0, bool)
    else:
        eval_emb, eval_ok = ev.emb, ev.ok
    stats = {
        "model": embedder.name,
        "model_hash": mhash,
        "dim": int(pool.emb.shape[1]),
        "pool_embedded": int(pool_ok.sum()),
        "pool_failed": int((~pool_ok).sum()),
        "eval_embedded": int(eval_ok.sum()),
        "cached": pool.cached + (ev.cached if ev else 0),
        "newly_embedded": pool.newly_embedded + (ev.newly_embedded if ev else 0),
        "shards": n_shards,
    }
    with atomic_dir(params.paths.embeddings_dir) as tmp:
        np.save(tmp / "pool.npy", pool.emb)
        pool_rows.filter(pl.Series(pool_ok)).select("path", "sha256").write_parquet(
            tmp / "pool_ids.parquet"
        )
        np.save(tmp / "eval.npy", eval_emb)
        eval_rows.filter(pl.Series(eval_ok)).write_parquet(tmp / "eval_ids.parquet")
        if (~pool_ok).any():
            pool_rows.filter(~pl.Series(pool_ok)).select("path", "sha256").with_columns(
                pl.lit("decode_failed_at_embed").alias("reason")
            ).write_parquet(tmp / "failed.parquet")
        st.lineage(
            tmp,
            {"manifest": manifest_path, "eval_set": Path(params.paths.manifest_dir) / EVAL_SET},
            stats,
        )
    return stats
