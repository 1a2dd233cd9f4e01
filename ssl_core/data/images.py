"""Decoding images safely: every failure becomes a reason string, never an exception mid-run."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

# Refuse decompression bombs loudly instead of allocating gigabytes.
Image.MAX_IMAGE_PIXELS = 16384 * 16384
PARQUET_SEP = "::"
# File signatures: an unidentifiable file that starts with one of these is a broken image, not
# some other kind of file.
_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mode: str
    format: str


def probe(data: bytes) -> ImageInfo | str:
    """Fully decode ``data``; return its :class:`ImageInfo` or a short reason it is unusable."""
    if not data:
        return "empty_file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or "unknown"
                im.load()  # verify() misses truncation in some formats; a full load does not
                return ImageInfo(im.width, im.height, im.mode, fmt)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "decompression_bomb"
    except Image.UnidentifiedImageError:
        return "corrupt_header" if data.startswith(_MAGIC) else "not_an_image"
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).lower()
        return "truncated" if "truncat" in msg else f"decode_error: {type(e).__name__}"


def read_bytes(root: str | Path, rel: str) -> bytes:
    """Bytes of pool entry ``rel``: a file under ``root``, or ``file.parquet::row`` for pools
    stored as a parquet of image bytes (column ``image``)."""
    if PARQUET_SEP in rel:
        file, row = rel.rsplit(PARQUET_SEP, 1)
        root = Path(root)
        src = root if root.is_file() and root.name == file else root / file
        col = pl.read_parquet(src, columns=["image"])["image"]
        return col[int(row)]
    return (Path(root) / rel).read_bytes()


def decode_gray_or_rgb(data: bytes, size: int, channels: int = 3) -> np.ndarray:
    """Decode to a (channels, size, size) float32 array in [0, 1] (bilinear resize)."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    if channels == 1:
        return arr[None]
    return arr.transpose(2, 0, 1)
