"""Stage ``embed``: unique ``ok`` pool images and eval images → embedding matrices + ids.

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
from ssl_core.data.demo_pool import EVAL_LABELS
from ssl_core.data.eval_set import load_eval_labels
from ssl_core.data.images import read_bytes
from ssl_core.stages.common import StageRun
from ssl_core.stages.ingest import MANIFEST
from ssl_core.utils.atomic import atomic_dir, write_json
from ssl_core.utils.hashing import sha256_bytes


def cache_root(params: Params) -> Path:
    """Where the embedding cache lives: next to, not inside, the DVC-tracked output."""
    return Path(params.paths.embeddings_dir).parent / ".cache" / "embeddings"


def _file_shas(root: str | Path, paths: list[str]) -> list[str | None]:
    """sha256 of each eval file; ``None`` where it can't be read (it then counts as failed)."""
    out: list[str | None] = []
    for p in paths:
        try:
            out.append(sha256_bytes(read_bytes(root, p)))
        except (OSError, ValueError, IndexError, pl.exceptions.PolarsError):
            out.append(None)
    return out


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.embed
    st = StageRun("embed", params, ("embed",), seed=cfg.seed)
    manifest_path = Path(params.paths.manifest_dir) / MANIFEST
    manifest = pl.read_parquet(manifest_path)
    pool_rows = manifest.filter((pl.col("status") == "ok") & pl.col("duplicate_of").is_null())
    eval_rows = load_eval_labels(params.paths.eval_dir)
    embedder = make_embedder(cfg.model, cfg.image_size, seed=cfg.seed)
    mhash = model_hash(embedder)
    cache = EmbeddingCache(cache_root(params), mhash)
    write_json(cache.dir / "model.json", {"name": embedder.name, **embedder.fingerprint})

    eval_paths = eval_rows["path"].to_list()
    eval_shas = _file_shas(params.paths.eval_dir, eval_paths)
    # kept in eval_ids.parquet: the dedup check's byte-copy leakage test reads it, unhashed again
    eval_rows = eval_rows.with_columns(pl.Series("sha256", eval_shas, dtype=pl.String))
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
        ev = embed_with_cache(
            cache,
            params.paths.eval_dir,
            eval_paths,
            eval_shas,
            embedder,
            desc="embed eval",
            **common,
        )
        n_shards = cache.n_shards
    pool_ok, eval_ok = pool.ok, ev.ok
    stats = {
        "model": embedder.name,
        "model_hash": mhash,
        "dim": int(pool.emb.shape[1]),
        "pool_embedded": int(pool_ok.sum()),
        "pool_failed": int((~pool_ok).sum()),
        "eval_embedded": int(eval_ok.sum()),
        "cached": pool.cached + ev.cached,
        "newly_embedded": pool.newly_embedded + ev.newly_embedded,
        "shards": n_shards,
    }
    with atomic_dir(params.paths.embeddings_dir) as tmp:
        np.save(tmp / "pool.npy", pool.emb)
        pool_rows.filter(pl.Series(pool_ok)).select("path", "sha256").write_parquet(
            tmp / "pool_ids.parquet"
        )
        np.save(tmp / "eval.npy", ev.emb)
        eval_rows.filter(pl.Series(eval_ok)).write_parquet(tmp / "eval_ids.parquet")
        if (~pool_ok).any():
            pool_rows.filter(~pl.Series(pool_ok)).select("path", "sha256").with_columns(
                pl.lit("decode_failed_at_embed").alias("reason")
            ).write_parquet(tmp / "failed.parquet")
        st.lineage(
            tmp,
            {"manifest": manifest_path, "eval_labels": Path(params.paths.eval_dir) / EVAL_LABELS},
            stats,
        )
    return stats
