"""Curation report plots: valid PNGs, bad files skipped, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_core.eval.curation_plots import (
    cluster_image_grid,
    plot_class_distribution,
    plot_cluster_sizes,
)


def _valid_png(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
        return im.size


def test_cluster_sizes_one_level_and_per_level(tmp_path):
    rng = np.random.default_rng(0)
    before = np.bincount(rng.zipf(1.5, 2000) % 64, minlength=64)
    after = np.minimum(before, 20)
    after[:3] = 0  # emptied clusters must not break the log axis
    _valid_png(plot_cluster_sizes(before, after, tmp_path / "one.png"))
    levels_b = {"bottom (level 0)": before, "top (level 1)": np.array([900, 700, 400])}
    levels_a = {"bottom (level 0)": after, "top (level 1)": np.array([300, 300, 200])}
    w, _ = _valid_png(plot_cluster_sizes(levels_b, levels_a, tmp_path / "two.png"))
    assert w > _valid_png(tmp_path / "one.png")[0]  # one panel per level
    with pytest.raises(ValueError, match="levels differ"):
        plot_cluster_sizes(levels_b, {"top (level 1)": after}, tmp_path / "bad.png")


def test_cluster_image_grid_skips_bad_files(tmp_path, digits_pool):
    good = sorted(p.relative_to(digits_pool).as_posix() for p in digits_pool.rglob("0*.png"))
    bad = ["a/empty.png", "a/text.jpg", "a/trunc.png", "a/header.png", "a/missing.png"]
    clusters = {0: good[:20] + bad, 1: bad + good[20:23], 2: bad, 3: good[30:40]}
    out = tmp_path / "grid.png"
    n = cluster_image_grid(digits_pool, clusters, out, per_cluster=6, max_clusters=3, seed=1)
    assert n == 6 + 3 + 0  # bad files skipped and replaced; cluster 3 beyond max_clusters
    w, h = _valid_png(out)
    assert w > 0 and h > 0
    again = tmp_path / "again.png"
    assert cluster_image_grid(digits_pool, clusters, again, 6, 3, seed=1) == n
    assert again.read_bytes() == out.read_bytes()  # seeded sample, deterministic image


def test_cluster_image_grid_all_bad_gives_placeholder(tmp_path, digits_pool):
    out = tmp_path / "empty.png"
    assert cluster_image_grid(digits_pool, {5: ["a/empty.png"]}, out) == 0
    _valid_png(out)
    assert cluster_image_grid(digits_pool, {}, tmp_path / "none.png") == 0
    _valid_png(tmp_path / "none.png")
    with pytest.raises(ValueError, match="> 0"):
        cluster_image_grid(digits_pool, {}, out, per_cluster=0)


def test_class_distribution(tmp_path):
    dists = {"raw_pool": [3000, 30, 300], "random_subset": [900, 9, 91], "curated": [400, 30, 300]}
    _valid_png(plot_class_distribution(dists, tmp_path / "cls.png"))
    _valid_png(plot_class_distribution(dists, tmp_path / "named.png", ["shirt", "bag", "boot"]))
    with pytest.raises(ValueError, match="class names"):
        plot_class_distribution(dists, tmp_path / "x.png", ["a"])
    with pytest.raises(ValueError, match="no class"):
        plot_class_distribution({}, tmp_path / "x.png")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
