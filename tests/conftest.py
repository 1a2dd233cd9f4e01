"""Shared fixtures: tiny real image pools (scikit-learn's bundled digits, Fashion-MNIST when
installed) and a small params file for end-to-end runs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)
os.environ.setdefault("SSLOPS_NO_PROGRESS", "1")
FMNIST = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def write_folder_params(proj: Path, pool: Path) -> Path:
    """``proj/params.yaml`` for an unlabelled folder pool such as :func:`digits_pool` (its 4
    broken files of 64 are within the quarantine rate); returns ``proj``."""
    import yaml

    proj.mkdir(parents=True, exist_ok=True)
    params = {
        "data": {"source": "folder", "labels": "none"},
        "paths": {"pool": str(pool)},
        "ingest": {"max_quarantine_rate": 0.1},
    }
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    return proj


def live_pids(marker: str, exclude: tuple[str, ...] = ()) -> list[int]:
    """Live processes (other than this one) whose command line contains ``marker`` and none of
    ``exclude``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd and not any(x in cmd for x in exclude):
            pids.append(int(d.name))
    return pids


@pytest.fixture
def digits_pool(tmp_path: Path) -> Path:
    """60 real 8x8 digit images upscaled to 16x16 PNGs, plus 4 broken files."""
    from sklearn.datasets import load_digits

    d = load_digits()
    pool = tmp_path / "pool"
    (pool / "a").mkdir(parents=True)
    for i in range(60):
        img = (d.images[i] * 16).clip(0, 255).astype(np.uint8).repeat(2, 0).repeat(2, 1)
        (pool / "a" / f"{i:03d}.png").write_bytes(png_bytes(img))
    (pool / "a" / "empty.png").write_bytes(b"")
    (pool / "a" / "text.jpg").write_bytes(b"not an image")
    noise = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    good = png_bytes(noise)
    (pool / "a" / "trunc.png").write_bytes(good[: len(good) // 2])
    (pool / "a" / "header.png").write_bytes(good[:6])
    return pool


@pytest.fixture
def fmnist_required() -> None:
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            "dataset-fashion-mnist not installed (apt-get install -y dataset-fashion-mnist)"
        )
