"""Stage ``manifest``: raw pool → ``raw_manifest.parquet`` (every file decoded and described)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssl_core.config import Params
from ssl_core.data.eval_set import EVAL_SET, build_eval_set, write_eval_set
from ssl_core.data.labels import precheck_labels
from ssl_core.data.manifest import build_manifest
from ssl_core.stages.common import StageRun, log
from ssl_core.utils.atomic import atomic_dir

MANIFEST = "raw_manifest.parquet"


def mark_exact_duplicates(df: pl.DataFrame) -> pl.DataFrame:
    """Add ``duplicate_of``: for an ``ok`` row whose bytes were seen before (by sha256, in path
    order), the path of the first copy; null for the kept copy and for quarantined rows."""
    ok = df.filter(pl.col("status") == "ok").sort("path")
    first = ok.group_by("sha256", maintain_order=True).agg(pl.col("path").first().alias("first"))
    ok = (
        ok.join(first, on="sha256")
        .with_columns(
            pl.when(pl.col("path") != pl.col("first")).then(pl.col("first")).alias("duplicate_of")
        )
        .drop("first")
    )
    bad = df.filter(pl.col("status") != "ok").with_columns(
        pl.lit(None, pl.String).alias("duplicate_of")
    )
    return pl.concat([ok, bad]).sort("path")


def run(params: Params, progress: bool = True) -> dict:
    st = StageRun("manifest", params, ("ingest", "data"))
    pool, out = Path(params.paths.pool), Path(params.paths.manifest_dir)
    precheck_labels(params)  # a bad labels file fails before any image is decoded
    df = mark_exact_duplicates(build_manifest(pool, params.ingest, progress=progress))
    evs = build_eval_set(params, df)
    log.info("labels: %s", evs.info["detail"])
    stats = {
        "rows": df.height,
        "ok": int((df["status"] == "ok").sum()),
        "quarantined": int((df["status"] == "quarantined").sum()),
        "exact_duplicates": int(df["duplicate_of"].is_not_null().sum()),
        "quarantine_reasons": {
            r: int(n)
            for r, n in df.filter(pl.col("reason").is_not_null())["reason"]
            .value_counts()
            .iter_rows()
        },
        "labels": evs.info["kind"],
        "eval_bank": evs.info.get("bank", 0),
        "eval_query": evs.info.get("query", 0),
        "classes": len(evs.info["classes"]),
    }
    with atomic_dir(out) as tmp:
        df.write_parquet(tmp / MANIFEST)
        # the pool's identity is the sorted list of (path, sha256) it holds
        (tmp / "pool_listing.csv").write_text(df.select("path", "sha256").write_csv())
        write_eval_set(evs, tmp)
        st.lineage(
            tmp,
            {"pool_listing": tmp / "pool_listing.csv", "eval_set": tmp / EVAL_SET},
            stats,
        )
    return stats
