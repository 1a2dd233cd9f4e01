import numpy as np
import polars as pl

from ssl_core.config import IngestConfig
from ssl_core.data.manifest import build_manifest
from ssl_core.stages.ingest import mark_exact_duplicates
from tests.conftest import png_bytes


def test_broken_files_quarantined_with_reasons(digits_pool):
    df = build_manifest(digits_pool, IngestConfig(), progress=False)
    assert df.height == 64
    bad = dict(df.filter(pl.col("status") == "quarantined").select("path", "reason").iter_rows())
    assert bad == {
        "a/empty.png": "empty_file",
        "a/text.jpg": "not_an_image",
        "a/trunc.png": "truncated",
        "a/header.png": "corrupt_header",
    }
    ok = df.filter(pl.col("status") == "ok")
    assert ok.height == 60
    assert (ok["width"] == 16).all() and ok["sha256"].str.len_chars().eq(64).all()


def test_size_limits_and_extensions(tmp_path):
    (tmp_path / "tiny.png").write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".DS_Store").write_text("x")
    df = build_manifest(tmp_path, IngestConfig(min_side=8), progress=False)
    reasons = dict(df.select("path", "reason").iter_rows())
    assert reasons["tiny.png"].startswith("too_small")
    assert reasons["notes.txt"].startswith("unsupported_extension")
    assert ".DS_Store" not in reasons


def test_parquet_pool(tmp_path):
    imgs = [png_bytes(np.full((16, 16), i * 20, np.uint8)) for i in range(5)] + [b"junk"]
    pl.DataFrame({"image": imgs}).write_parquet(tmp_path / "pool.parquet")
    df = build_manifest(tmp_path / "pool.parquet", IngestConfig(), progress=False)
    assert df.height == 6 and (df["status"] == "ok").sum() == 5
    assert df["path"][0] == "pool.parquet::0"


def test_exact_duplicates_marked_first_copy_kept(tmp_path):
    img = png_bytes(np.arange(256, dtype=np.uint8).reshape(16, 16))
    for name in ("b.png", "a.png", "c.png"):
        (tmp_path / name).write_bytes(img)
    (tmp_path / "d.png").write_bytes(png_bytes(np.zeros((16, 16), np.uint8)))
    df = mark_exact_duplicates(build_manifest(tmp_path, IngestConfig(), progress=False))
    dup = dict(df.select("path", "duplicate_of").iter_rows())
    assert dup == {"a.png": None, "b.png": "a.png", "c.png": "a.png", "d.png": None}
