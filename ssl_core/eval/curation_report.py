"""Demo-only curation diagnostics: class balance of raw vs random vs curated, planted dups found.

Only possible when the pool's labels are known (``pool_labels.parquet``, written by
``sslops import-demo``); on a user's unlabelled pool the report simply omits this section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ssl_core.data.demo_pool import POOL_LABELS


def _dist(labels: np.ndarray, n: int) -> dict:
    c = np.bincount(labels, minlength=n).astype(float)
    p = c / max(c.sum(), 1)
    nz = p[p > 0]
    return {
        "counts": c.astype(int).tolist(),
        "entropy_normalised": float(-(nz * np.log(nz)).sum() / np.log(n)),
        "max_min_ratio": float(c.max() / c.min()) if c.min() > 0 else float("inf"),
    }


def curation_report(eval_dir: Path, manifest: pl.DataFrame, removed: pl.DataFrame,
                    curated: pl.DataFrame, seed: int = 0) -> dict | None:
    path = Path(eval_dir) / POOL_LABELS
    if not path.is_file():
        return None
    labels = pl.read_parquet(path)
    ok = manifest.filter(pl.col("status") == "ok").join(labels, on="path")
    n = int(labels.filter(pl.col("label") >= 0)["label"].max()) + 1
    raw = ok["label"].to_numpy()
    rng = np.random.default_rng(seed)
    rand = raw[rng.choice(len(raw), size=min(curated.height, len(raw)), replace=False)]
    cur = curated.join(labels, on="path")["label"].to_numpy()
    planted = labels.filter(pl.col("origin").is_in(["exact_duplicate", "near_duplicate"]))
    found = planted.join(removed.select("path", "reason"), on="path", how="left")
    by_origin = {
        o: {"planted": int(g.height), "removed": int(g["reason"].is_not_null().sum())}
        for (o,), g in found.group_by("origin")
    }
    broken = labels.filter(pl.col("origin").str.starts_with("broken"))
    quarantined = broken.join(manifest.select("path", "status"), on="path")
    return {
        "class_distribution": {"raw_pool": _dist(raw, n), "random_subset": _dist(rand, n),
                               "curated": _dist(cur, n)},
        "planted_duplicates": by_origin,
        "broken_files": {"planted": broken.height,
                         "quarantined": int((quarantined["status"] == "quarantined").sum())},
    }
