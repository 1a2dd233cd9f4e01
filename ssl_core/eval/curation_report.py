"""Label-based curation diagnostics: class balance of raw vs random vs curated, and (demo only)
planted duplicates found and broken files quarantined.

Only possible when pool labels are known (``pool_labels.parquet`` next to the manifest: the
demo's, or the labelled images of a user's pool); without them the report shows the label-free
evidence instead (cluster balance, feature health).
"""

from __future__ import annotations

import numpy as np
import polars as pl


def _dist(labels: np.ndarray, n: int) -> dict:
    c = np.bincount(labels, minlength=n).astype(float)
    p = c / max(c.sum(), 1)
    nz = p[p > 0]
    return {
        "counts": c.astype(int).tolist(),
        "entropy_normalised": float(-(nz * np.log(nz)).sum() / np.log(n)),
        "max_min_ratio": float(c.max() / c.min()) if c.min() > 0 else float("inf"),
    }


def curation_report(
    labels: pl.DataFrame | None,
    manifest: pl.DataFrame,
    removed: pl.DataFrame,
    curated: pl.DataFrame,
    seed: int = 0,
) -> dict | None:
    """Class balance (and, with the demo's planted columns, duplicates/broken files found).

    Args:
        labels: (path, label >= 0 or -1 for unlabelled) of pool images, or None.
    """
    if labels is None or labels.filter(pl.col("label") >= 0).is_empty():
        return None
    ok = manifest.filter(pl.col("status") == "ok").join(labels, on="path")
    ok = ok.filter(pl.col("label") >= 0)
    n = int(labels["label"].max()) + 1
    raw = ok["label"].to_numpy()
    rng = np.random.default_rng(seed)
    rand = raw[rng.choice(len(raw), size=min(curated.height, len(raw)), replace=False)]
    cur = curated.join(labels, on="path")["label"].to_numpy()
    out = {
        "class_distribution": {
            "raw_pool": _dist(raw, n),
            "random_subset": _dist(rand, n),
            "curated": _dist(cur, n),
        }
    }
    if {"origin", "source_index"} <= set(labels.columns):
        out.update(_planted(labels, manifest, removed))
    return out


def _planted(labels: pl.DataFrame, manifest: pl.DataFrame, removed: pl.DataFrame) -> dict:
    """Demo only: planted duplicate groups resolved by dedup, planted broken files quarantined."""
    ok = manifest.filter(pl.col("status") == "ok").join(labels, on="path")
    # A planted copy is resolved when at most one member of its group (the original and all
    # its copies) survives dedup; which member survives (first path) does not matter.
    removed_paths = removed.select("path", pl.lit(False).alias("kept"))
    survived = ok.select("path", "source_index", "origin").join(
        removed_paths, on="path", how="left"
    )
    survived = survived.with_columns(pl.col("kept").fill_null(True))
    groups = (
        survived.filter(pl.col("source_index") >= 0)
        .group_by("source_index")
        .agg(pl.col("kept").sum().alias("survivors"), pl.col("origin"))
    )
    by_origin = {}
    for origin in ("exact_duplicate", "near_duplicate"):
        g = groups.filter(pl.col("origin").list.contains(origin))
        by_origin[origin] = {
            "planted_groups": g.height,
            "resolved": int((g["survivors"] <= 1).sum()),
        }
    broken = labels.filter(pl.col("origin").str.starts_with("broken"))
    quarantined = broken.join(manifest.select("path", "status"), on="path")
    return {
        "planted_duplicates": by_origin,
        "broken_files": {
            "planted": broken.height,
            "quarantined": int((quarantined["status"] == "quarantined").sum()),
        },
    }
