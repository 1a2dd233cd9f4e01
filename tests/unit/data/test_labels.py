"""Optional labels: layouts found, bad label files refused with what to fix, the eval split."""

from pathlib import Path

import polars as pl
import pytest

from ssl_core.config import DataConfig
from ssl_core.data.labels import (
    EVAL_LABELS,
    LabelsError,
    class_index,
    draw_eval_split,
    find_labels,
    folder_labels,
    read_labels_file,
)

PATHS = [f"{c}/img{i}.png" for c in ("cat", "dog", "eel") for i in range(10)]


def test_folder_layout_detected_only_when_every_image_is_in_a_class_folder():
    df = folder_labels(PATHS)
    assert df is not None and sorted(df["label"].unique()) == ["cat", "dog", "eel"]
    assert folder_labels([*PATHS, "loose.png"]) is None  # an image at the top: not a layout
    assert folder_labels([p for p in PATHS if p.startswith("cat")]) is None  # one folder
    assert folder_labels(["pool.parquet::0", "pool.parquet::1"]) is None


def test_find_labels_order(tmp_path):
    pool, labels = tmp_path / "pool", tmp_path / "labels"
    pool.mkdir()
    labels.mkdir()
    assert find_labels("auto", labels, pool, PATHS).kind == "folders"
    assert find_labels("none", labels, pool, PATHS).kind == "none"
    assert find_labels("auto", labels, pool, ["a.png", "b/c.png"]).kind == "none"
    with pytest.raises(LabelsError, match="not a folder-per-class"):
        find_labels("folders", labels, pool, ["a.png", "b/c.png"])
    (labels / "labels.csv").write_text("path,label\na.png,x\n")
    assert find_labels("auto", labels, pool, PATHS).kind == "file"  # a file beats folders
    pl.DataFrame({"path": ["e.png"], "label": [1], "split": ["bank"]}).write_parquet(
        labels / EVAL_LABELS
    )
    assert find_labels("auto", labels, pool, PATHS).kind == "eval_folder"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("path,klass\na.png,x\n", "missing \\['label'\\]"),
        ("path,label\na.png,x\na.png,y\n", "duplicated paths"),
        ("path,label\n/abs/a.png,x\n", "absolute paths"),
        ("path,label\na.png,\n", "without a label"),
    ],
)
def test_bad_labels_files_name_the_problem(tmp_path, text, match):
    f = tmp_path / "labels.csv"
    f.write_text(text)
    with pytest.raises(LabelsError, match=match):
        read_labels_file(f)


def test_class_index_orders_numeric_labels_numerically():
    idx, names = class_index(pl.Series(["10", "2", "1", "2"]))
    assert names == ["1", "2", "10"] and idx.to_list() == [2, 1, 0, 1]
    idx, names = class_index(pl.Series(["dog", "cat"]))
    assert names == ["cat", "dog"] and idx.to_list() == [1, 0]


def test_eval_split_is_stratified_seeded_and_leaves_training_images():
    rows = pl.DataFrame(
        {
            "path": [*PATHS, "rare/a.png", "rare/b.png"],
            "label": [p.split("/")[0] for p in PATHS] + ["rare"] * 2,
        }
    )
    cfg = DataConfig(eval_fraction=0.4, query_fraction=0.5)
    ev = draw_eval_split(rows, cfg)
    per_class = ev.group_by("label", "split").len().sort("label", "split")
    assert per_class["len"].to_list() == [2, 2] * 3  # 4 of 10 per class: 2 bank, 2 query
    assert "rare" not in ev["label"].to_list()  # < 3 images: the class stays in the pool
    assert ev.equals(draw_eval_split(rows, cfg))
    assert not ev.equals(draw_eval_split(rows, DataConfig(eval_fraction=0.4, seed=1)))
    capped = draw_eval_split(rows, DataConfig(eval_fraction=1.0, eval_max_per_class=3))
    assert capped.group_by("label").len()["len"].max() == 3
    everything = draw_eval_split(rows, DataConfig(eval_fraction=1.0))
    assert everything.group_by("label").len()["len"].max() == 9  # never all of a class


def test_labels_file_paths_outside_the_pool_are_refused(tmp_path):
    from ssl_core.config import Params
    from ssl_core.data.eval_set import build_eval_set

    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.png,x\nmissing.png,y\n")
    params = Params.model_validate(
        {"data": {"source": "folder"}, "paths": {"pool": str(tmp_path), "labels": str(labels)}}
    )
    manifest = pl.DataFrame(
        {"path": ["a.png"], "status": ["ok"], "duplicate_of": [None], "sha256": ["0" * 64]},
        schema_overrides={"duplicate_of": pl.String},
    )
    with pytest.raises(LabelsError, match="1 labelled paths are not files of the pool"):
        build_eval_set(params, manifest)
    assert Path(labels).read_text().startswith("path,label")


def test_parquet_pool_with_label_column_gives_an_eval_set(tmp_path, monkeypatch):
    """A parquet pool (``image`` bytes + ``label``) through ``ingest``: the eval set is drawn
    from it, read back through the ``file.parquet::row`` paths, and the parquet is untouched."""
    import numpy as np

    from ssl_core.config import load_params
    from ssl_core.data.eval_set import load_eval_set, training_candidates
    from ssl_core.data.images import read_bytes
    from ssl_core.stages import ingest
    from tests.conftest import png_bytes

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    imgs = [png_bytes(rng.integers(0, 255, (16, 16), dtype=np.uint8)) for _ in range(40)]
    pool = tmp_path / "pool.parquet"
    pl.DataFrame({"image": imgs, "label": ["a", "b"] * 20}).write_parquet(pool)
    before = pool.read_bytes()
    (tmp_path / "params.yaml").write_text("data: {source: parquet}\npaths: {pool: pool.parquet}\n")
    params = load_params(tmp_path / "params.yaml")
    stats = ingest.run(params, progress=False)
    assert stats["labels"] == "parquet_column" and stats["classes"] == 2
    ev = load_eval_set(params)
    assert ev is not None and ev.table.height == 8  # 20 % of 20 per class
    assert read_bytes(ev.root, ev.query["path"][0])[:4] == b"\x89PNG"
    manifest = pl.read_parquet(tmp_path / "data/manifest/raw_manifest.parquet")
    assert training_candidates(params, manifest, ev).height == 32
    assert pool.read_bytes() == before
