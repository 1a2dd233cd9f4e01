"""Build the demo's *uncurated* raw pool and its evaluation set from Fashion-MNIST.

The pool imitates what a crawl looks like: long-tailed class frequencies (geometric decay with
``imbalance_ratio`` = largest / smallest class), byte-identical copies, near-duplicates (a brightened,
noisy, JPEG re-encoded copy) and a few broken files, written as unlabelled image files in
shard folders. Labels are kept aside (``pool_labels.parquet``) for evaluation only. The balanced
test split becomes the kNN query set; a balanced slice of the unused train images is the
labelled kNN bank. Everything is a deterministic function of ``DemoConfig``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from ssl_core.config import DemoConfig
from ssl_core.data.fashion_mnist import load_split
from ssl_core.data.labels import EVAL_LABELS, POOL_LABELS
from ssl_core.utils.progress import progress_bar

SHARD_SIZE = 1000
BROKEN_KINDS = ("truncated", "empty", "not_an_image", "garbage_jpeg")
# A ~270-image demo (params.yaml ``demo:`` overrides) for tests and dry runs.
TINY_DEMO = {
    "max_per_class": 60,
    "imbalance_ratio": 10,
    "exact_duplicates": 10,
    "near_duplicates": 10,
    "broken_files": 4,
    "eval_bank_per_class": 20,
    "eval_query_per_class": 10,
}


def class_sizes(max_per_class: int, imbalance_ratio: float, n_classes: int = 10) -> list[int]:
    """Geometric long tail: class c gets ``max * ratio**(-c/(n-1))`` images (at least 1)."""
    return [
        max(1, round(max_per_class * imbalance_ratio ** (-c / (n_classes - 1))))
        for c in range(n_classes)
    ]


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _near_duplicate(img: np.ndarray, rng: np.random.Generator) -> bytes:
    """Brighten/contrast a little, add faint noise, re-encode as JPEG (quality 85-95).

    Fashion-MNIST is so dense that a 1-pixel shift moves an image further (in pixel space) than
    its natural nearest neighbour; shifted copies are only findable with a shift-robust
    embedding, so the demo plants photometric near-duplicates, which any embedding must find.
    """
    gain = rng.uniform(1.02, 1.1)
    noise = rng.normal(0.0, 2.0, size=img.shape)
    bright = np.clip(img.astype(np.float32) * gain + rng.uniform(0, 6) + noise, 0, 255)
    bright = bright.astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(bright).save(buf, format="JPEG", quality=int(rng.integers(85, 96)))
    return buf.getvalue()


def _broken(kind: str, img: np.ndarray) -> tuple[str, bytes]:
    if kind == "truncated":
        data = _png(img)
        return ".png", data[: len(data) // 2]
    if kind == "empty":
        return ".png", b""
    if kind == "not_an_image":
        return ".jpg", b"this is a text file with an image extension\n" * 4
    return ".jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2  # JPEG magic, garbage body


@dataclass(frozen=True)
class DemoSummary:
    pool_files: int
    class_sizes: list[int]
    exact_duplicates: int
    near_duplicates: int
    broken_files: int
    eval_bank: int
    eval_query: int


def build_demo(
    cfg: DemoConfig, pool_dir: Path, eval_dir: Path, progress: bool = True
) -> DemoSummary:
    """Write the raw pool to ``pool_dir`` and the eval set to ``eval_dir`` (both must be new)."""
    rng = np.random.default_rng(cfg.seed)
    train_x, train_y = load_split(cfg.source_dir, "train")
    test_x, test_y = load_split(cfg.source_dir, "test")
    sizes = class_sizes(cfg.max_per_class, cfg.imbalance_ratio)
    per_class = np.bincount(train_y, minlength=10)
    if max(sizes) + cfg.eval_bank_per_class > per_class.min():
        raise ValueError(
            f"demo.max_per_class ({cfg.max_per_class}) + demo.eval_bank_per_class "
            f"({cfg.eval_bank_per_class}) exceeds the {per_class.min()} train images per class"
        )

    pool_idx, bank_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(train_y == c))
        pool_idx.append(idx[: sizes[c]])
        bank_idx.append(idx[sizes[c] : sizes[c] + cfg.eval_bank_per_class])
    originals = np.concatenate(pool_idx)

    # (bytes, extension, label, origin, source index)
    items: list[tuple[bytes, str, int, str, int]] = [
        (_png(train_x[i]), ".png", int(train_y[i]), "original", int(i)) for i in originals
    ]
    for i in rng.choice(originals, size=cfg.exact_duplicates, replace=True):
        items.append((_png(train_x[i]), ".png", int(train_y[i]), "exact_duplicate", int(i)))
    for i in rng.choice(originals, size=cfg.near_duplicates, replace=True):
        data = _near_duplicate(train_x[i], rng)
        items.append((data, ".jpg", int(train_y[i]), "near_duplicate", int(i)))
    for b in range(cfg.broken_files):
        kind = BROKEN_KINDS[b % len(BROKEN_KINDS)]
        ext, data = _broken(kind, train_x[originals[b % len(originals)]])
        items.append((data, ext, -1, f"broken:{kind}", -1))

    order = rng.permutation(len(items))  # shuffle so file names carry no label information
    rows = []
    pool_dir.mkdir(parents=True, exist_ok=True)
    for n, j in enumerate(progress_bar(order, desc="demo pool", unit="img", enabled=progress)):
        data, ext, label, origin, src = items[j]
        rel = f"shard_{n // SHARD_SIZE:03d}/img_{n:06d}{ext}"
        (pool_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (pool_dir / rel).write_bytes(data)
        rows.append({"path": rel, "label": label, "origin": origin, "source_index": src})

    eval_dir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(eval_dir / POOL_LABELS)
    eval_rows = []
    query_idx = np.concatenate(
        [
            rng.permutation(np.flatnonzero(test_y == c))[: cfg.eval_query_per_class]
            for c in range(10)
        ]
    )
    for split, xs, ys, idx in (
        ("bank", train_x, train_y, np.concatenate(bank_idx)),
        ("query", test_x, test_y, query_idx),
    ):
        (eval_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        for i in progress_bar(idx, desc=f"eval {split}", unit="img", enabled=progress):
            rel = f"images/{split}/{split}_{int(i):05d}.png"
            (eval_dir / rel).write_bytes(_png(xs[i]))
            eval_rows.append({"path": rel, "label": int(ys[i]), "split": split})
    pl.DataFrame(eval_rows).write_parquet(eval_dir / EVAL_LABELS)
    return DemoSummary(
        pool_files=len(items),
        class_sizes=sizes,
        exact_duplicates=cfg.exact_duplicates,
        near_duplicates=cfg.near_duplicates,
        broken_files=cfg.broken_files,
        eval_bank=int(sum(len(b) for b in bank_idx)),
        eval_query=len(query_idx),
    )
