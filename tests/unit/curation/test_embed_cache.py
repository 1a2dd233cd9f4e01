"""Embedding cache keyed by (sha256, model hash): reuse, growth, model isolation, crash resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.datasets import load_digits

from ssl_core.config import Params
from ssl_core.curation import embed as embed_mod
from ssl_core.curation.embed import PixelEmbedder, embed_paths, make_embedder, model_hash
from ssl_core.curation.embed_cache import EmbeddingCache
from ssl_core.data.labels import EVAL_LABELS
from ssl_core.stages import embed as stage
from ssl_core.stages import ingest
from ssl_core.utils.hashing import sha256_file
from tests.conftest import png_bytes


def _params(tmp: Path, pool: Path, eval_dir: Path, run: str = "run", **embed) -> Params:
    d = tmp / run
    return Params.model_validate(
        {
            "paths": {
                "pool": str(pool),
                "labels": str(eval_dir),
                "manifest_dir": str(d / "manifest"),
                "embeddings_dir": str(d / "embeddings"),
            },
            "embed": {
                "model": "pixels",
                "image_size": 16,
                "batch_size": 8,
                "shard_size": 16,
                **embed,
            },
        }
    )


@pytest.fixture
def eval_dir(tmp_path: Path) -> Path:
    d, imgs = tmp_path / "eval", load_digits()
    d.mkdir()
    rows = []
    for i in range(100, 110):
        img = (imgs.images[i] * 16).clip(0, 255).astype(np.uint8).repeat(2, 0).repeat(2, 1)
        (d / f"e{i}.png").write_bytes(png_bytes(img))
        rows.append(
            {
                "path": f"e{i}.png",
                "label": int(imgs.target[i]),
                "split": "bank" if i < 105 else "query",
            }
        )
    pl.DataFrame(rows).write_parquet(d / EVAL_LABELS)
    return d


def _run(params: Params) -> tuple[dict, dict[str, np.ndarray | pl.DataFrame]]:
    ingest.run(params, progress=False)
    stats = stage.run(params, progress=False)
    e = Path(params.paths.embeddings_dir)
    out = {
        "pool": np.load(e / "pool.npy"),
        "eval": np.load(e / "eval.npy"),
        "pool_ids": pl.read_parquet(e / "pool_ids.parquet"),
        "eval_ids": pl.read_parquet(e / "eval_ids.parquet"),
    }
    return stats, out


def _same(a: dict, b: dict) -> None:
    for k in ("pool", "eval"):
        assert a[k].dtype == np.float32 and np.array_equal(a[k], b[k]), k
    for k in ("pool_ids", "eval_ids"):
        assert a[k].equals(b[k]), k


def test_second_run_embeds_nothing(tmp_path, digits_pool, eval_dir):
    p = _params(tmp_path, digits_pool, eval_dir)
    s1, o1 = _run(p)
    assert s1["newly_embedded"] == 70 and s1["cached"] == 0  # 60 pool + 10 eval
    assert s1["shards"] == 5  # pool 16+16+16+12, eval 10 (each call flushes its tail)
    assert (tmp_path / "run" / ".cache" / "embeddings" / s1["model_hash"]).is_dir()
    s2, o2 = _run(p)
    assert s2["newly_embedded"] == 0 and s2["cached"] == 70 and s2["shards"] == s1["shards"]
    _same(o1, o2)
    lineage = (Path(p.paths.embeddings_dir) / "lineage.json").read_text()
    assert '"newly_embedded": 0' in lineage and '"shards"' in lineage


def test_growing_pool_embeds_only_new_images(tmp_path, digits_pool, eval_dir):
    aside = tmp_path / "aside"
    aside.mkdir()
    for f in sorted((digits_pool / "a").glob("0[45]*.png")):  # 040..059 held back
        shutil.move(f, aside / f.name)
    p = _params(tmp_path, digits_pool, eval_dir)
    s1, _ = _run(p)
    assert s1["newly_embedded"] == 50  # 40 pool + 10 eval
    for f in aside.iterdir():
        shutil.move(f, digits_pool / "a" / f.name)
    s2, o2 = _run(p)
    assert s2["newly_embedded"] == 20 and s2["cached"] == 50
    _, fresh = _run(_params(tmp_path, digits_pool, eval_dir, run="fresh"))
    _same(o2, fresh)  # manifest order, independent of which run cached which image


def test_different_model_different_cache(tmp_path, digits_pool, eval_dir):
    s1, _ = _run(_params(tmp_path, digits_pool, eval_dir, image_size=16))
    s2, o2 = _run(_params(tmp_path, digits_pool, eval_dir, image_size=8))
    assert s1["model_hash"] != s2["model_hash"]
    assert s2["newly_embedded"] == 70 and s2["cached"] == 0
    assert o2["pool"].shape == (60, 64)
    caches = sorted(p.name for p in (tmp_path / "run" / ".cache" / "embeddings").iterdir())
    assert caches == sorted([s1["model_hash"], s2["model_hash"]])


def test_model_hash_pins_spec_seed_and_size():
    assert model_hash(make_embedder("pixels", 16)) == model_hash(make_embedder("pixels", 16))
    assert model_hash(make_embedder("pixels", 16)) != model_hash(make_embedder("pixels", 8))
    b0, b0b, b1 = (make_embedder("bootstrap", 16, seed=s) for s in (0, 0, 1))
    assert model_hash(b0) == model_hash(b0b) != model_hash(b1)
    assert b0.fingerprint["weights"] != b1.fingerprint["weights"]
    with pytest.raises(FileNotFoundError, match="neither"):
        make_embedder("no/such/checkpoint", 16)


class _Crashing(PixelEmbedder):
    """Pixel embedder (same fingerprint, so same cache) that dies after ``n`` batches."""

    def __init__(self, image_size: int, n: int):
        super().__init__(image_size)
        self.n = n

    def __call__(self, x):
        if self.n == 0:
            raise RuntimeError("simulated crash")
        self.n -= 1
        return super().__call__(x)


def test_crash_mid_run_resumes_to_identical_output(tmp_path, digits_pool, eval_dir, monkeypatch):
    _, reference = _run(_params(tmp_path, digits_pool, eval_dir, run="reference"))
    p = _params(tmp_path, digits_pool, eval_dir)
    monkeypatch.setattr(stage, "make_embedder", lambda spec, size, seed=0: _Crashing(size, 5))
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(p)
    assert not Path(p.paths.embeddings_dir).exists()  # no torn stage output
    mh = model_hash(PixelEmbedder(16))
    cdir = tmp_path / "run" / ".cache" / "embeddings" / mh
    assert len(EmbeddingCache(cdir.parent, mh)) == 32  # 5 batches of 8 → two full shards of 16
    # a torn shard on top: matrix written, ids never were (crash between the two renames)
    (cdir / "shard_00002.npy").write_bytes(b"\x93NUMPY garbage")
    (cdir / ".shard_00003.parquet.abc.tmp").write_bytes(b"partial")
    monkeypatch.setattr(stage, "make_embedder", embed_mod.make_embedder)
    s, out = _run(p)
    assert s["newly_embedded"] == 70 - 32 and s["cached"] == 32
    _same(out, reference)


def test_identical_to_uncached_path_for_pixels(tmp_path, digits_pool, eval_dir):
    p = _params(tmp_path, digits_pool, eval_dir)
    _, out = _run(p)
    ids = out["pool_ids"]["path"].to_list()
    direct, ok = embed_paths(digits_pool, ids, PixelEmbedder(16), 8, progress=False)
    assert ok.all()
    # the cache stores float16: identical to the uncached vectors rounded to float16
    assert np.array_equal(out["pool"], direct.astype(np.float16).astype(np.float32))
    assert np.allclose(out["pool"], direct, atol=1e-3)
    manifest = pl.read_parquet(Path(p.paths.manifest_dir) / ingest.MANIFEST)
    expected = manifest.filter((pl.col("status") == "ok") & pl.col("duplicate_of").is_null())
    assert ids == expected["path"].to_list() and out["pool_ids"].columns == ["path", "sha256"]
    ev = out["eval_ids"]["path"].to_list()
    direct_eval, _ = embed_paths(eval_dir, ev, PixelEmbedder(16), 8, progress=False)
    assert np.allclose(out["eval"], direct_eval, atol=1e-3)
    assert out["eval_ids"].columns == ["path", "label", "class_name", "split", "sha256"]
    assert out["eval_ids"]["sha256"].to_list() == [sha256_file(eval_dir / q) for q in ev]


def test_cache_roundtrip_and_validation(tmp_path):
    c = EmbeddingCache(tmp_path, "ab" * 32)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    assert c.add(["s1", "s2", "s3"], a) == 0 and c.add(["s4", "s1"], b) == 1
    got = EmbeddingCache(tmp_path, "ab" * 32).gather(["s4", "s1", "s3"])
    assert np.array_equal(got, np.stack([b[0], a[0], a[2]]).astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="dim"):
        c.add(["x"], np.zeros((1, 5)))
    with pytest.raises(ValueError, match="float16"):
        c.add(["x"], np.full((1, 4), 1e6))
    with pytest.raises(KeyError, match="not in the embedding cache"):
        c.gather(["nope"])
    with pytest.raises(ValueError, match="hex"):
        EmbeddingCache(tmp_path, "../escape")


def test_bootstrap_embedder_tells_images_apart():
    # bars at 16 heights: an untrained ViT must still map them to distinguishable features
    # (with the recipe's layer-scale 1e-5 they are equal to float32 precision: std ~1e-7)
    x = torch.zeros(16, 1, 28, 28)
    for i in range(16):
        x[i, 0, i : i + 8, 4:24] = 1.0
    feats = make_embedder("bootstrap", 28)(x)
    assert float(feats.std(dim=0).mean()) > 1e-4


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # a float16 of the matrix / a byte of the parquet footer
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: _flip(d / "shard_00001.npy"),
        lambda d: (d / "shard_00001.npy").write_bytes((d / "shard_00001.npy").read_bytes()[:-64]),
        lambda d: _flip(d / "shard_00001.parquet"),
        lambda d: (d / "shard_00001.record.json").unlink(),  # killed before the record
    ],
    ids=["npy_flipped_byte", "npy_truncated", "parquet_flipped_byte", "no_record"],
)
def test_damaged_shard_is_embedded_again(tmp_path, digits_pool, eval_dir, caplog, damage):
    p = _params(tmp_path, digits_pool, eval_dir)
    s1, reference = _run(p)
    cdir = tmp_path / "run" / ".cache" / "embeddings" / s1["model_hash"]
    assert len(list(cdir.glob("shard_*.record.json"))) == s1["shards"]
    damage(cdir)
    with caplog.at_level("WARNING", logger="sslops"):
        s2, out = _run(p)
    assert "dropping shard" in caplog.text and "shard_00001" in caplog.text
    assert s2["newly_embedded"] == 16 and s2["cached"] == 70 - 16  # only that shard, again
    _same(out, reference)
    s3, _ = _run(p)  # the re-embedded shard is verified and reused from now on
    assert s3["newly_embedded"] == 0
