"""Labels files with missing, extra or duplicated rows (and broken eval folders) are refused
with a clear error before ingest decodes a single image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from ssl_core.config import Params
from ssl_core.data import manifest
from ssl_core.data.labels import EVAL_LABELS, LabelsError, precheck_labels
from ssl_core.stages import ingest


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(6):
        (pool / f"img{i}.png").write_bytes(png(i * 30))
    (pool / "notes.txt").write_text("not an image: needs no label")
    return pool


def params(tmp_path: Path, pool: Path, labels: Path, **data) -> Params:
    return Params.model_validate(
        {
            "data": {"source": "folder", **data},
            "paths": {
                "pool": str(pool),
                "labels": str(labels),
                "manifest_dir": str(tmp_path / "out" / "manifest"),
            },
        }
    )


def write_labels(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    f = tmp_path / "labels.csv"
    f.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    return f


ALL = [(f"img{i}.png", "ab"[i % 2]) for i in range(6)]


def test_complete_labels_pass(tmp_path, pool):
    precheck_labels(params(tmp_path, pool, write_labels(tmp_path, ALL)))


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (ALL[:4], r"2 of 6 pool images have no row, e\.g\. \['img4\.png', 'img5\.png'\].*"
                  r"data\.partial_labels: true"),
        ([*ALL, ("img9.png", "a")], r"1 labelled paths are not files of the pool.*img9\.png"),
        ([*ALL, ("img0.png", "b")], r"2 duplicated paths.*img0\.png"),
        ([*ALL[:5], ("img5.png", "")], "rows without a label"),
    ],
)  # fmt: skip
def test_bad_labels_files_refused(tmp_path, pool, rows, match):
    with pytest.raises(LabelsError, match=match):
        precheck_labels(params(tmp_path, pool, write_labels(tmp_path, rows)))


def test_partial_labels_allowed_when_asked(tmp_path, pool):
    precheck_labels(params(tmp_path, pool, write_labels(tmp_path, ALL[:2]), partial_labels=True))
    with pytest.raises(LabelsError, match="not files of the pool"):  # extra rows never are
        precheck_labels(
            params(tmp_path, pool, write_labels(tmp_path, [("x.png", "a")]), partial_labels=True)
        )


def test_parquet_pool_labels_file(tmp_path):
    pool = tmp_path / "pool.parquet"
    pl.DataFrame({"image": [png(i) for i in range(3)]}).write_parquet(pool)
    rows = [(f"pool.parquet::{i}", "a") for i in range(3)]
    precheck_labels(params(tmp_path, pool, write_labels(tmp_path, rows)))
    with pytest.raises(LabelsError, match="1 of 3 pool images have no row"):
        precheck_labels(params(tmp_path, pool, write_labels(tmp_path, rows[:2])))


def test_eval_folder_checked(tmp_path, pool):
    ev = tmp_path / "eval"
    ev.mkdir()
    for i in range(3):
        (ev / f"e{i}.png").write_bytes(png(i))
    good = {"path": ["e0.png", "e1.png", "e2.png"], "label": [0, 1, 0],
            "split": ["bank", "bank", "query"]}  # fmt: skip
    pl.DataFrame(good).write_parquet(ev / EVAL_LABELS)
    precheck_labels(params(tmp_path, pool, ev))
    cases = [
        ({**good, "path": ["e0.png", "e1.png", "gone.png"]}, r"not in .*gone\.png"),
        ({**good, "path": ["e0.png", "e0.png", "e2.png"]}, "duplicated paths"),
        ({**good, "split": ["bank", "train", "query"]}, "split not in"),
    ]
    for table, match in cases:
        pl.DataFrame(table).write_parquet(ev / EVAL_LABELS)
        with pytest.raises(LabelsError, match=match):
            precheck_labels(params(tmp_path, pool, ev))


def test_ingest_fails_before_decoding_anything(tmp_path, pool, monkeypatch):
    def no_decode(*a, **kw):
        raise AssertionError("an image was decoded before the labels were checked")

    monkeypatch.setattr(manifest, "probe", no_decode)
    p = params(tmp_path, pool, write_labels(tmp_path, [*ALL, ("missing.png", "a")]))
    with pytest.raises(LabelsError, match="not files of the pool"):
        ingest.run(p, progress=False)
    assert not (tmp_path / "out" / "manifest").exists()
