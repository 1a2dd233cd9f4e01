import polars as pl

from ssl_core.config import DemoConfig
from ssl_core.data.demo_pool import EVAL_LABELS, POOL_LABELS, build_demo, class_sizes
from ssl_core.utils.hashing import hash_path


def test_class_sizes_long_tail():
    s = class_sizes(1000, 100)
    assert s[0] == 1000 and s[-1] == 10 and s == sorted(s, reverse=True)


def _cfg(**kw):
    base = dict(
        max_per_class=50,
        imbalance_ratio=10,
        exact_duplicates=5,
        near_duplicates=5,
        broken_files=4,
        eval_bank_per_class=5,
        eval_query_per_class=3,
        seed=1,
    )
    return DemoConfig(**{**base, **kw})


def test_demo_pool_contents_and_determinism(tmp_path, fmnist_required):
    s = build_demo(_cfg(), tmp_path / "a" / "raw", tmp_path / "a" / "eval", progress=False)
    build_demo(_cfg(), tmp_path / "b" / "raw", tmp_path / "b" / "eval", progress=False)
    assert hash_path(tmp_path / "a" / "raw") == hash_path(tmp_path / "b" / "raw")
    labels = pl.read_parquet(tmp_path / "a" / "eval" / POOL_LABELS)
    assert labels.height == s.pool_files == sum(s.class_sizes) + 5 + 5 + 4
    origins = labels["origin"].value_counts().sort("origin")
    assert dict(origins.iter_rows())["near_duplicate"] == 5
    assert labels.filter(pl.col("origin").str.starts_with("broken")).height == 4
    ev = pl.read_parquet(tmp_path / "a" / "eval" / EVAL_LABELS)
    assert ev.filter(pl.col("split") == "query").height == 30
    # file names carry no label information
    assert not any(str(c) in p for p in labels["path"] for c in ("label", "class"))
    other = build_demo(
        _cfg(seed=2), tmp_path / "c" / "raw", tmp_path / "c" / "eval", progress=False
    )
    assert other.pool_files == s.pool_files
    assert hash_path(tmp_path / "c" / "raw") != hash_path(tmp_path / "a" / "raw")
