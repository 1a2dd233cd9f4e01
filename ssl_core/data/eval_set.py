"""The labelled evaluation set, built by ``ingest`` and read by every later stage.

``ingest`` writes three files next to the manifest: ``eval_set.parquet`` (path, label, class
name, split ∈ {bank, query}, sha256; empty without labels), ``labels.json`` (where the labels
came from, where the eval images live, class names) and, when pool labels are known,
``pool_labels.parquet`` (used only for the curation report). The eval images are read from
``paths.labels`` (a ready eval folder, e.g. the demo's) or from ``paths.pool`` (an eval set
drawn from a labelled pool); either way they are only read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ssl_core.config import Params
from ssl_core.data.images import read_bytes
from ssl_core.data.labels import (
    LabelsError,
    class_index,
    draw_eval_split,
    find_labels,
)
from ssl_core.utils.hashing import sha256_bytes

EVAL_SET = "eval_set.parquet"
LABELS_INFO = "labels.json"
POOL_LABELS_OUT = "pool_labels.parquet"
EVAL_SCHEMA = {
    "path": pl.String,
    "label": pl.Int64,
    "class_name": pl.String,
    "split": pl.String,
    "sha256": pl.String,
}


@dataclass(frozen=True)
class EvalSet:
    """Eval images under ``root`` with integer labels and a bank/query split."""

    root: Path
    table: pl.DataFrame
    classes: list[str]

    @property
    def bank(self) -> pl.DataFrame:
        return self.table.filter(pl.col("split") == "bank")

    @property
    def query(self) -> pl.DataFrame:
        return self.table.filter(pl.col("split") == "query")

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class EvalBuild:
    table: pl.DataFrame
    pool_labels: pl.DataFrame | None
    info: dict


def _file_shas(root: Path, paths: list[str]) -> list[str | None]:
    """sha256 of each eval file; ``None`` where it can't be read (it then counts as failed)."""
    out: list[str | None] = []
    for p in paths:
        try:
            out.append(sha256_bytes(read_bytes(root, p)))
        except (OSError, ValueError, IndexError, pl.exceptions.PolarsError):
            out.append(None)
    return out


def _from_pool(labelled: pl.DataFrame, manifest: pl.DataFrame, params: Params, where: str):
    """Check pool labels against the manifest and draw the held-out eval set from them."""
    unknown = labelled.join(manifest.select("path"), on="path", how="anti")
    if unknown.height:
        raise LabelsError(
            f"{where}: {unknown.height} labelled paths are not files of the pool "
            f"{params.paths.pool}, e.g. {unknown['path'].head(3).to_list()}; paths must be "
            "relative to the pool folder"
        )
    usable = manifest.filter((pl.col("status") == "ok") & pl.col("duplicate_of").is_null())
    usable = labelled.join(usable.select("path", "sha256"), on="path")
    drawn = draw_eval_split(usable.select("path", "label"), params.data)
    table = drawn.join(usable.select("path", "sha256"), on="path")
    pool_labels = labelled.join(drawn.select("path"), on="path", how="anti")
    return table, pool_labels


def build_eval_set(params: Params, manifest: pl.DataFrame) -> EvalBuild:
    """Find the labels (``data.labels``), check them, and build the eval set.

    Raises:
        LabelsError: a labels file or layout that can't be used, with what to fix.
    """
    pool, labels_dir = Path(params.paths.pool), Path(params.paths.labels)
    ok_paths = manifest.filter(pl.col("status") == "ok")["path"].to_list()
    found = find_labels(params.data.labels, labels_dir, pool, ok_paths)
    info = {"kind": found.kind, "detail": found.detail, "eval_root": None, "classes": []}
    if found.kind == "none":
        return EvalBuild(pl.DataFrame(schema=EVAL_SCHEMA), None, info)
    if found.kind == "eval_folder":
        ev = found.eval
        table = ev.select("path", pl.col("label").cast(pl.String), "split").with_columns(
            pl.Series("sha256", _file_shas(labels_dir, ev["path"].to_list()), pl.String)
        )
        pool_labels, info["eval_root"] = found.pool, "labels"
    else:
        table, pool_labels = _from_pool(found.pool, manifest, params, found.detail)
        info["eval_root"] = "pool"
    labels, classes = class_index(table["label"])
    table = table.with_columns(labels.alias("label"), table["label"].alias("class_name"))
    if found.kind != "eval_folder" and pool_labels is not None:
        lookup = {n: i for i, n in enumerate(classes)}
        pool_labels = pool_labels.select(
            "path",
            pl.col("label").replace_strict(lookup, default=-1, return_dtype=pl.Int64),
            pl.col("label").alias("class_name"),
        )
    table = table.select(list(EVAL_SCHEMA)).cast(EVAL_SCHEMA).sort("split", "path")
    info.update(
        classes=classes,
        bank=int((table["split"] == "bank").sum()),
        query=int((table["split"] == "query").sum()),
        pool_labelled=0 if pool_labels is None else pool_labels.height,
    )
    return EvalBuild(table, pool_labels, info)


def write_eval_set(build: EvalBuild, out: Path) -> None:
    build.table.write_parquet(out / EVAL_SET)
    if build.pool_labels is not None:
        build.pool_labels.write_parquet(out / POOL_LABELS_OUT)
    (out / LABELS_INFO).write_text(json.dumps(build.info, indent=2) + "\n")


def load_eval_set(params: Params) -> EvalSet | None:
    """The eval set ``ingest`` wrote, or ``None`` when the run has no labels."""
    mdir = Path(params.paths.manifest_dir)
    info_path = mdir / LABELS_INFO
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} not found: run `sslops manifest` first")
    info = json.loads(info_path.read_text())
    table = pl.read_parquet(mdir / EVAL_SET)
    if info["eval_root"] is None or table.is_empty():
        return None
    root = Path(params.paths.labels if info["eval_root"] == "labels" else params.paths.pool)
    ev = EvalSet(root, table, list(info["classes"]))
    if ev.bank.is_empty() or ev.query.is_empty():
        raise ValueError(f"{mdir / EVAL_SET}: needs rows with split == 'bank' and 'query'")
    return ev


def load_pool_labels(params: Params) -> pl.DataFrame | None:
    """Labels of pool images (curation report only), or ``None``."""
    path = Path(params.paths.manifest_dir) / POOL_LABELS_OUT
    return pl.read_parquet(path) if path.is_file() else None


def training_candidates(
    params: Params, manifest: pl.DataFrame, evset: EvalSet | None
) -> pl.DataFrame:
    """Manifest rows that may train a model: decodable (``ok``) and not held out as eval
    images (``evset``, when drawn from the pool). Exact duplicates are still in (dedup drops
    them)."""
    ok = manifest.filter(pl.col("status") == "ok")
    if evset is not None and evset.root == Path(params.paths.pool):
        ok = ok.join(evset.table.select("path"), on="path", how="anti")
    return ok
