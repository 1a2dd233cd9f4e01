"""Stage ``dedup``: exact (sha256), near-duplicate (faiss cosine) and eval decontamination.

Outputs ``kept.parquet`` (what curation sees) and ``removed.parquet`` (every dropped row with
its reason, the row it duplicates and the similarity), so nothing disappears silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ssl_core.config import Params
from ssl_core.curation.dedup import decontaminate, near_duplicates
from ssl_core.data.eval_set import load_eval_set, training_candidates
from ssl_core.stages.common import StageRun
from ssl_core.stages.ingest import MANIFEST
from ssl_core.utils.atomic import atomic_dir
from ssl_core.utils.failpoints import failpoint

REMOVED_SCHEMA = {
    "path": pl.String,
    "sha256": pl.String,
    "reason": pl.String,
    "nearest_path": pl.String,
    "similarity": pl.Float64,
}


def run(params: Params, progress: bool = True) -> dict:
    cfg = params.dedup
    st = StageRun("dedup", params, ("dedup",))
    emb_dir = Path(params.paths.embeddings_dir)
    manifest_path = Path(params.paths.manifest_dir) / MANIFEST
    manifest = pl.read_parquet(manifest_path)
    ids = pl.read_parquet(emb_dir / "pool_ids.parquet")
    pool = np.load(emb_dir / "pool.npy")
    eval_ids = pl.read_parquet(emb_dir / "eval_ids.parquet")
    eval_emb = np.load(emb_dir / "eval.npy")

    exact = manifest.filter(pl.col("duplicate_of").is_not_null()).select(
        "path",
        "sha256",
        pl.lit("exact_duplicate").alias("reason"),
        pl.col("duplicate_of").alias("nearest_path"),
        pl.lit(1.0).alias("similarity"),
    )
    near = near_duplicates(pool, cfg.near_dup_threshold, k=cfg.k)
    failpoint("dedup.near_done")
    paths = ids["path"].to_numpy()
    removed_near = ids.filter(pl.Series(~near.keep)).select(
        "path",
        "sha256",
        pl.lit("near_duplicate").alias("reason"),
        pl.Series("nearest_path", paths[near.nearest_kept[~near.keep]]),
        pl.Series("similarity", near.nearest_kept_sim[~near.keep].astype(np.float64)),
    )
    kept_idx = np.flatnonzero(near.keep)
    dec = decontaminate(pool[kept_idx], eval_emb, cfg.decontam_threshold, k=1)
    # without labels there is no eval set: nothing to decontaminate against (nearest = null)
    eval_paths = np.append(eval_ids["path"].to_numpy().astype(object), None)
    nn_eval = dec.nearest_eval[:, 0]  # -1 (no eval set) picks the trailing None
    nn_sim = dec.similarity[:, 0].astype(np.float64)
    cont = ~dec.keep
    removed_cont = ids[kept_idx[cont]].select(
        "path",
        "sha256",
        pl.lit("eval_contamination").alias("reason"),
        pl.Series("nearest_path", eval_paths[nn_eval[cont]], pl.String),
        pl.Series("similarity", nn_sim[cont]),
    )
    final = kept_idx[dec.keep]
    kept = ids[final].with_columns(
        pl.Series("emb_row", final, pl.Int64),
        pl.Series("nearest_eval_path", eval_paths[nn_eval[dec.keep]], pl.String),
        pl.Series("nearest_eval_sim", nn_sim[dec.keep], nan_to_null=True),
    )
    removed = pl.concat([f.cast(REMOVED_SCHEMA) for f in (exact, removed_near, removed_cont)]).sort(
        "path"
    )
    n_in = training_candidates(params, manifest, load_eval_set(params)).height
    stats = {
        "training_candidates": n_in,
        "kept": kept.height,
        "kept_fraction": kept.height / max(n_in, 1),
        "removed_exact": exact.height,
        "removed_near": removed_near.height,
        "removed_eval_contamination": removed_cont.height,
        "near_dup_components": near.n_components,
        "decontaminated_against": len(eval_ids),
    }
    with atomic_dir(params.paths.dedup_dir) as tmp:
        kept.write_parquet(tmp / "kept.parquet")
        removed.write_parquet(tmp / "removed.parquet")
        st.lineage(
            tmp,
            {
                "manifest": manifest_path,
                "embeddings": emb_dir / "pool.npy",
                "eval_embeddings": emb_dir / "eval.npy",
            },
            stats,
        )
        failpoint("dedup.before_swap")
    return stats
