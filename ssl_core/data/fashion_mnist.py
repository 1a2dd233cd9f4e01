"""Reader for the Fashion-MNIST idx-ubyte files (``apt-get install dataset-fashion-mnist``)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
INSTALL_HINT = (
    "Fashion-MNIST not found. Install it with `sudo apt-get install -y dataset-fashion-mnist` "
    "(Debian/Ubuntu) or set demo.source_dir in params.yaml to a folder holding "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz."
)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated idx file ({arr.size} values, header says {shape})")
    return arr.reshape(shape)


def _find(source: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (source / name).is_file():
            return source / name
    raise FileNotFoundError(f"{source / stem}[.gz] missing. {INSTALL_HINT}")


def load_split(source_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) for ``split`` in {"train", "test"}."""
    source = Path(source_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist. {INSTALL_HINT}")
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(_find(source, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find(source, f"{prefix}-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise ValueError(f"{source}: {split} has {len(images)} images but {len(labels)} labels")
    return images, labels.astype(np.int64)
