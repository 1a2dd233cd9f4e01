"""The labelled evaluation set: a folder of images plus ``eval_labels.parquet``."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssl_core.data.demo_pool import EVAL_LABELS


def load_eval_labels(eval_dir: str | Path) -> pl.DataFrame:
    """Rows (path, label, split ∈ {bank, query}); a clear error when the file is missing."""
    path = Path(eval_dir) / EVAL_LABELS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the eval set is a folder with images and {EVAL_LABELS} "
            "(columns path, label, split in {bank, query}); `sslops import-demo` builds one"
        )
    return pl.read_parquet(path)
