"""Image accounting: every raw manifest row, and the one reason it did or did not reach a stage.

Reasons, in the order they apply (a row gets the first that fits): ``quarantined`` (unreadable
at ingest; ``detail`` is the manifest's reason), ``eval_holdout`` (drawn from the pool as an
eval image, never trained on), ``exact_duplicate`` (``detail``: the copy kept),
``embed_failed``, ``near_duplicate`` / ``eval_contamination`` (dedup; ``detail``: the nearest
kept / eval image), ``not_sampled`` (curation); the rest are the images the stage used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ssl_core.config import Params
from ssl_core.data.eval_set import EVAL_SET, LABELS_INFO
from ssl_core.stages.curate import CURATED
from ssl_core.stages.ingest import MANIFEST
from ssl_core.utils.atomic import atomic_path

#: how far down the pipeline each asset's images got, and what the survivors are called
_DEPTH = {
    "manifest": (1, "usable"),
    "embeddings": (2, "embedded"),
    "dedup": (3, "kept"),
    "clusters": (3, "kept"),
    "curated": (4, "curated"),
    "teacher": (4, "curated"),
    "students": (4, "curated"),
    "report": (4, "curated"),
}
#: every reason a row can be dropped for, and the depth from which it applies
REASONS = {
    "quarantined": 1,
    "eval_holdout": 1,
    "exact_duplicate": 1,
    "embed_failed": 2,
    "near_duplicate": 3,
    "eval_contamination": 3,
    "not_sampled": 4,
}


@dataclass
class Accounting:
    pool: str  # manifest paths are relative to it
    used: str  # what the surviving rows are called (curated, kept, ...)
    depth: int  # 1 manifest, 2 embeddings, 3 dedup, 4 curated
    table: pl.DataFrame = field(repr=False)  # path, reason, detail: one row per manifest row
    extra_paths: int = 0  # rows of the stage's list not in the manifest (should be 0)

    @property
    def rows(self) -> int:
        return self.table.height

    def counts(self) -> dict[str, int]:
        got = dict(self.table["reason"].value_counts().iter_rows())
        reasons = [r for r, d in REASONS.items() if d <= self.depth]
        out = {r: int(got.get(r, 0)) for r in (self.used, *reasons)}
        return out | {r: int(n) for r, n in got.items() if r not in out}  # e.g. unaccounted

    def quarantine_reasons(self) -> dict[str, int]:
        q = self.table.filter(pl.col("reason") == "quarantined")["detail"].value_counts()
        return {str(r): int(n) for r, n in sorted(q.iter_rows())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "manifest_rows": self.rows,
            "used": self.used,
            "used_count": self.counts()[self.used],
            "counts": self.counts(),
            "quarantine_reasons": self.quarantine_reasons(),
            "paths_not_in_manifest": self.extra_paths,
        }


def _paths(path: Path) -> pl.Series:
    return pl.read_parquet(path, columns=["path"])["path"]


def _needs(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"image accounting needs {path}: run `sslops {stage}` first")
    return path


def account(params: Params, asset: str) -> Accounting | None:
    """Every manifest row with its reason, as far as ``asset`` goes; ``None`` for the raw pool.

    Raises:
        FileNotFoundError: an output the accounting reads is missing (names the stage to run).
    """
    if asset not in _DEPTH:
        return None
    depth, used = _DEPTH[asset]
    p = params.paths
    mdir = Path(p.manifest_dir)
    m = pl.read_parquet(_needs(mdir / MANIFEST, "ingest"))
    none = pl.lit(None, pl.String)
    rules: list[tuple[pl.Expr, pl.Expr, pl.Expr]] = [  # (condition, reason, detail)
        (pl.col("status") != "ok", pl.lit("quarantined"), pl.col("reason")),
    ]
    info = json.loads(_needs(mdir / LABELS_INFO, "ingest").read_text())
    if info.get("eval_root") == "pool":  # eval images drawn from the pool are never trained on
        held = _paths(mdir / EVAL_SET).implode()
        rules.append((pl.col("path").is_in(held), pl.lit("eval_holdout"), none))
    dup = pl.col("duplicate_of")
    rules.append((dup.is_not_null(), pl.lit("exact_duplicate"), dup))
    survivors = None  # the stage's own list of the images it kept
    if depth >= 2:
        edir = Path(p.embeddings_dir)
        survivors = _paths(_needs(edir / "pool_ids.parquet", "embed"))
        if (edir / "failed.parquet").is_file():
            failed = _paths(edir / "failed.parquet").implode()
            rules.append((pl.col("path").is_in(failed), pl.lit("embed_failed"), none))
    if depth >= 3:
        removed = pl.read_parquet(_needs(Path(p.dedup_dir) / "removed.parquet", "dedup"))
        removed = removed.filter(pl.col("reason").is_in(["near_duplicate", "eval_contamination"]))
        m = m.join(
            removed.select("path", pl.col("reason").alias("_dedup"), "nearest_path"),
            on="path",
            how="left",
        )
        rules.append((pl.col("_dedup").is_not_null(), pl.col("_dedup"), pl.col("nearest_path")))
        survivors = _paths(_needs(Path(p.dedup_dir) / "kept.parquet", "dedup"))
    if depth >= 4:
        survivors = _paths(_needs(Path(p.curated_dir) / CURATED, "curate"))
    if survivors is not None:  # at depth 4: not sampled; earlier: should not happen
        lost = "not_sampled" if depth >= 4 else "unaccounted"
        rules.append((~pl.col("path").is_in(survivors.implode()), pl.lit(lost), none))
    reason, detail = pl.when(rules[0][0]).then(rules[0][1]), pl.when(rules[0][0]).then(rules[0][2])
    for cond, why, det in rules[1:]:
        reason, detail = reason.when(cond).then(why), detail.when(cond).then(det)
    table = m.select(
        "path",
        reason.otherwise(pl.lit(used)).alias("reason"),
        detail.otherwise(none).cast(pl.String).alias("detail"),
    )
    extra = 0 if survivors is None else int((~survivors.is_in(m["path"].implode())).sum())
    return Accounting(p.pool, used, depth, table, extra)


def write_paths(acc: Accounting, out: str | Path) -> Path:
    """Write ``path, reason, detail`` for every manifest row (``.csv`` or ``.parquet``),
    atomically.

    Raises:
        ValueError: another file extension.
    """
    out = Path(out)
    if out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--paths-out {out}: use a .csv or .parquet file name")
    with atomic_path(out) as tmp:
        if out.suffix == ".csv":
            acc.table.write_csv(tmp)
        else:
            acc.table.write_parquet(tmp)
    return out
