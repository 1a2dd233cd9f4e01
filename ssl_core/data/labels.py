"""Optional labels: find them, check them, and draw the held-out eval set.

Self-supervised training needs no labels; labels only make the evaluation measurable (kNN,
decontamination, class balance of the curated set). Accepted layouts, tried in this order by
``data.labels: auto``:

1. ``paths.labels`` is a folder with ``eval_labels.parquet`` (columns ``path``, ``label``,
   ``split`` ∈ {bank, query}; images relative to that folder): a ready eval set, kept apart
   from the pool (the demo's layout). An optional ``pool_labels.parquet`` there labels pool
   images for the curation report only.
2. ``paths.labels`` is a CSV or parquet file (or a folder holding ``labels.csv`` /
   ``labels.parquet``) with columns ``path`` (relative to the pool) and ``label``.
3. A parquet pool with a ``label`` column.
4. A folder-per-class pool (the ImageFolder convention): every image sits in a sub-folder and
   the first folder of its path is its class.

In layouts 2-4 the eval set is drawn from the labelled pool images (``data.eval_fraction`` per
class, split into bank and query by ``data.query_fraction``, seeded) and those images are kept
out of the pool that trains the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ssl_core.config import DataConfig, Params
from ssl_core.data.images import PARQUET_SEP

EVAL_LABELS = "eval_labels.parquet"
POOL_LABELS = "pool_labels.parquet"
LABEL_FILES = ("labels.csv", "labels.parquet")


class LabelsError(ValueError):
    """A labels file or layout that can't be used; the message says what to fix."""


@dataclass
class Labels:
    """What :func:`find_labels` found. ``kind`` is none | eval_folder | file | parquet_column |
    folders; ``pool`` holds (path, label) of pool images; ``eval`` a ready eval set."""

    kind: str
    detail: str = ""
    pool: pl.DataFrame | None = None
    eval: pl.DataFrame | None = None
    extra: dict = field(default_factory=dict)


def read_labels_file(path: Path) -> pl.DataFrame:
    """(path, label) rows of a CSV or parquet file, labels as strings; clear errors."""
    try:
        df = (
            pl.read_csv(path, infer_schema=False)
            if path.suffix == ".csv"
            else pl.read_parquet(path)
        )
    except (OSError, pl.exceptions.PolarsError) as e:
        raise LabelsError(f"{path}: can't read the labels file: {e}") from e
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise LabelsError(
            f"{path}: a labels file needs columns 'path' (relative to the pool) and 'label'; "
            f"missing {sorted(missing)}, found {df.columns}"
        )
    return check_label_rows(
        df.select(pl.col("path").cast(pl.String), pl.col("label").cast(pl.String)), str(path)
    )


def check_label_rows(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """Reject null, absolute and duplicated paths and null labels, naming examples."""
    problems = {
        "rows without a path": df.filter(pl.col("path").is_null() | (pl.col("path") == "")),
        "rows without a label": df.filter(pl.col("label").is_null() | (pl.col("label") == "")),
        "absolute paths (use paths relative to the pool)": df.filter(
            pl.col("path").str.starts_with("/")
        ),
        "duplicated paths": df.filter(pl.col("path").is_duplicated()),
    }
    for what, bad in problems.items():
        if bad.height:
            ex = bad.head(3).rows()
            raise LabelsError(f"{where}: {bad.height} {what}, e.g. {ex}")
    return df


def folder_labels(paths: list[str]) -> pl.DataFrame | None:
    """(path, label = first folder) when every path sits in a sub-folder and there are at
    least two such folders; None otherwise."""
    if not paths or any("/" not in p or PARQUET_SEP in p for p in paths):
        return None
    labels = [p.split("/", 1)[0] for p in paths]
    if len(set(labels)) < 2:
        return None
    return pl.DataFrame({"path": paths, "label": labels})


def _labels_file(where: Path) -> Path | None:
    if where.is_file() and where.suffix in (".csv", ".parquet"):
        return where
    if where.is_dir():
        return next((where / n for n in LABEL_FILES if (where / n).is_file()), None)
    return None


def find_labels(mode: str, labels_path: Path, pool: Path, ok_paths: list[str]) -> Labels:
    """The labels to use under ``data.labels = mode`` (see the module docstring).

    Args:
        mode: ``auto`` | ``none`` | ``folders``.
        labels_path: ``paths.labels`` (may not exist: then there is no labels file).
        pool: ``paths.pool``.
        ok_paths: decodable pool entries (manifest rows with status ok).
    """
    if mode == "none":
        return Labels("none", "data.labels is none")
    if mode == "folders":
        df = folder_labels(ok_paths)
        if df is None:
            raise LabelsError(
                f"data.labels is folders but {pool} is not a folder-per-class tree (every image "
                "in a class sub-folder, at least 2 classes); use data.labels: auto or none"
            )
        return Labels("folders", f"{df['label'].n_unique()} class folders in {pool}", pool=df)
    if (labels_path / EVAL_LABELS).is_file():
        ev = pl.read_parquet(labels_path / EVAL_LABELS)
        pool_df = None
        if (labels_path / POOL_LABELS).is_file():
            pool_df = pl.read_parquet(labels_path / POOL_LABELS)
        return Labels("eval_folder", f"eval set {labels_path / EVAL_LABELS}", pool=pool_df, eval=ev)
    file = _labels_file(labels_path)
    if file is not None:
        return Labels("file", f"labels file {file}", pool=read_labels_file(file))
    if pool.is_file() and pool.suffix == ".parquet":
        names = pl.read_parquet_schema(pool)
        if "label" in names:
            col = pl.read_parquet(pool, columns=["label"])["label"].cast(pl.String)
            df = pl.DataFrame(
                {"path": [f"{pool.name}{PARQUET_SEP}{i}" for i in range(len(col))], "label": col}
            ).filter(pl.col("label").is_not_null())
            return Labels("parquet_column", f"'label' column of {pool}", pool=df)
    df = folder_labels(ok_paths)
    if df is not None:
        return Labels(
            "folders",
            f"folder-per-class layout detected in {pool} ({df['label'].n_unique()} classes: "
            f"{', '.join(sorted(df['label'].unique().to_list())[:8])}, ...); set data.labels: none "
            "if these folders are not classes",
            pool=df,
        )
    return Labels(
        "none",
        f"no labels found (no eval set or labels file at {labels_path}, no "
        "class folders in the pool): label-based metrics are skipped",
    )


def _listed_paths(pool: Path, params: Params) -> tuple[list[str], list[str]]:
    """(every listed pool entry, the candidate images among them), without decoding."""
    if pool.is_file() and pool.suffix == ".parquet":
        n = pl.scan_parquet(pool).select(pl.len()).collect().item()
        names = [f"{pool.name}{PARQUET_SEP}{i}" for i in range(n)]
        return names, names
    from ssl_core.data.manifest import list_pool

    entries = list_pool(pool, params.ingest)
    return [e[0] for e in entries], [e[0] for e in entries if e[2] is None]


def _check_eval_folder(labels_path: Path) -> None:
    """A ready eval set: columns, no duplicated / empty rows, known splits, every file present."""
    where = labels_path / EVAL_LABELS
    try:
        df = pl.read_parquet(where)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise LabelsError(f"{where}: can't read the eval set: {e}") from e
    missing = {"path", "label", "split"} - set(df.columns)
    if missing:
        raise LabelsError(f"{where}: needs columns path, label, split; missing {sorted(missing)}")
    rows = check_label_rows(
        df.select(pl.col("path").cast(pl.String), pl.col("label").cast(pl.String)), str(where)
    )
    bad_split = df.filter(~pl.col("split").is_in(["bank", "query"]))
    if bad_split.height:
        raise LabelsError(
            f"{where}: {bad_split.height} rows with split not in (bank, query), e.g. "
            f"{bad_split.head(3).rows()}"
        )
    absent = [p for p in rows["path"] if not (labels_path / p).is_file()]
    if absent:
        raise LabelsError(
            f"{where}: {len(absent)} rows name files that are not in {labels_path}, e.g. "
            f"{absent[:3]}; remove those rows or restore the files"
        )


def precheck_labels(params: Params) -> None:
    """Check the labels against the pool listing before ingest decodes anything: a labels
    file's duplicated, absolute or empty rows, rows naming no pool file (extra) and pool images
    without a row (missing, unless ``data.partial_labels``); a ready eval folder's rows and
    files. Other layouts have nothing to check yet.

    Raises:
        LabelsError: naming the file, the count and a few example rows, and what to change.
    """
    labels_path, pool = Path(params.paths.labels), Path(params.paths.pool)
    if params.data.labels != "auto":
        return
    if (labels_path / EVAL_LABELS).is_file():
        _check_eval_folder(labels_path)
        return
    file = _labels_file(labels_path)
    if file is None:
        return
    df = read_labels_file(file)
    listed, candidates = _listed_paths(pool, params)
    extra = df.filter(~pl.col("path").is_in(listed))
    if extra.height:
        raise LabelsError(
            f"labels file {file}: {extra.height} labelled paths are not files of the pool {pool}, "
            f"e.g. {extra['path'].head(3).to_list()}; paths must be relative to the pool folder"
        )
    unlabelled = sorted(set(candidates) - set(df["path"]))
    if unlabelled and not params.data.partial_labels:
        raise LabelsError(
            f"labels file {file}: {len(unlabelled)} of {len(candidates)} pool images have no "
            f"row, e.g. {unlabelled[:3]}; add their rows, or set data.partial_labels: true in "
            "params.yaml to train on them unlabelled (they never enter the eval set)"
        )


def class_index(labels: pl.Series) -> tuple[pl.Series, list[str]]:
    """Map label strings to 0..C-1 (numeric order when every label is an integer)."""
    names = sorted(set(labels.cast(pl.String).to_list()))
    if all(n.lstrip("-").isdigit() for n in names):
        names = sorted(names, key=int)
    lookup = {n: i for i, n in enumerate(names)}
    return labels.cast(pl.String).replace_strict(lookup, return_dtype=pl.Int64), names


def draw_eval_split(labelled: pl.DataFrame, cfg: DataConfig) -> pl.DataFrame:
    """Stratified held-out eval set from (path, label) rows: per class ``eval_fraction`` of its
    images (at least 2, at most ``eval_max_per_class``, never all of them), split into bank and
    query. Classes with fewer than 3 images stay in the training pool. Returns (path, label,
    split) in path order."""
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for label, group in sorted(labelled.group_by("label"), key=lambda kv: str(kv[0][0])):
        paths = sorted(group["path"].to_list())
        n = len(paths)
        if n < 3:
            continue
        n_eval = min(max(2, round(cfg.eval_fraction * n)), cfg.eval_max_per_class, n - 1)
        n_query = min(max(1, round(cfg.query_fraction * n_eval)), n_eval - 1)
        picked = [paths[i] for i in rng.permutation(n)[:n_eval]]
        rows += [(p, label[0], "query" if i < n_query else "bank") for i, p in enumerate(picked)]
    return pl.DataFrame(
        rows, schema={"path": pl.String, "label": pl.String, "split": pl.String}, orient="row"
    ).sort("path")
