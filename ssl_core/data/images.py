"""Decoding images safely, and the same way everywhere.

:func:`open_image` is the one decode path: ingest (:func:`probe`) measures what it returns and
every later reader (:func:`decode_gray_or_rgb`, used by the training / eval datasets and the
report) resizes what it returns, so a model sees the pixels ingest checked. It:

* checks the size declared in the header against a pixel cap (and ``ingest.max_side``) before a
  single pixel is decoded, so a decompression bomb (a few KB declaring 100k x 100k) costs no
  memory; PIL's own ``MAX_IMAGE_PIXELS`` guard stays on as a backstop;
* takes the first frame of animated GIF / WebP / APNG;
* applies the EXIF orientation (``ImageOps.exif_transpose``) before any pixel is used; an
  unreadable EXIF block leaves the image as stored (both ingest and training see the same);
* scales 16-bit grey (``I;16*`` PNG / TIFF) to 8 bit (``round(v * 255 / 65535)``), not clipped;
  32-bit ``I`` and float ``F`` images are scaled the same way when their values exceed 8 bit;
* composites alpha (``LA``, ``RGBA``, ``PA``, palette with transparency) on a fixed white
  background (:data:`ALPHA_BACKGROUND`): what a browser shows, and deterministic, unlike the
  arbitrary colour that hides under fully transparent pixels when alpha is dropped;
* converts CMYK (incl. Adobe's inverted JPEG CMYK), YCbCr, LAB, HSV and palette images to RGB.

Every failure of :func:`probe` is a short reason string (the manifest's ``reason``), never an
exception mid-run.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageOps

# PIL's backstop: opening an image over 2x this raises, over 1x warns (an error in probe()).
Image.MAX_IMAGE_PIXELS = 16384 * 16384
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
"""Default pixel cap of :func:`open_image` (``ingest.max_pixels`` is at most this)."""
ALPHA_BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited on this colour (white)."""
PARQUET_SEP = "::"
# File signatures: an unidentifiable file that starts with one of these is a broken image, not
# some other kind of file.
_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_EXIF_ERRORS = (ValueError, SyntaxError, OSError, KeyError, TypeError, struct.error)


class ImageRejected(ValueError):
    """An image refused before decoding; ``reason`` is the manifest's quarantine reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    width: int  # after the EXIF orientation
    height: int
    mode: str  # as stored (e.g. CMYK, I;16, P), before conversion to 8-bit L / RGB
    format: str


def check_declared_size(im: Image.Image, max_pixels: int, max_side: int | None = None) -> None:
    """Refuse ``im`` by its header size, before any pixel is decoded.

    Raises:
        ImageRejected: ``too_big`` (a side over ``max_side``) or ``too_many_pixels``.
    """
    w, h = im.size
    if max_side is not None and max(w, h) > max_side:
        raise ImageRejected(f"too_big: {w}x{h} > ingest.max_side")
    if w * h > max_pixels:
        raise ImageRejected(f"too_many_pixels: {w}x{h} > ingest.max_pixels ({max_pixels})")


def _scale_to_8bit(arr: np.ndarray, full_scale: float) -> Image.Image:
    """Grey array of values in ``[0, full_scale]`` → 8-bit ``L`` image (rounded, clipped)."""
    arr = np.asarray(arr, dtype=np.float64)
    out = np.clip(np.rint(arr * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def to_8bit(im: Image.Image) -> Image.Image:
    """A loaded image of any PIL mode → ``L`` or ``RGB`` (see the module docstring)."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I;16"):
        return _scale_to_8bit(np.asarray(im), 65535.0)
    if mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        peak = float(arr.max(initial=0.0))
        full = 65535.0 if peak > 255 else (1.0 if mode == "F" and peak <= 1.0 else 255.0)
        return _scale_to_8bit(arr, full)
    if mode == "P" and "transparency" in im.info:
        mode, im = "RGBA", im.convert("RGBA")
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV; ValueError for modes PIL can't map


def _orient(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except _EXIF_ERRORS:  # broken EXIF: keep the stored orientation (same for every reader)
        return im


def open_image(
    data: bytes, max_pixels: int = MAX_PIXELS, max_side: int | None = None
) -> tuple[Image.Image, ImageInfo]:
    """Decode ``data`` to an 8-bit ``L`` or ``RGB`` image, the one way every stage does.

    Args:
        data: The encoded file.
        max_pixels: Refuse (before decoding) images declaring more pixels than this.
        max_side: Refuse (before decoding) images with a longer side.

    Returns:
        The upright, first-frame, 8-bit image and what was stored (:class:`ImageInfo`).

    Raises:
        ImageRejected: Over a limit, or empty. PIL's ``UnidentifiedImageError`` / ``OSError``
            (truncated, corrupt), ``ValueError``, ``SyntaxError``,
            ``Image.DecompressionBombError`` for files PIL cannot decode.
    """
    if not data:
        raise ImageRejected("empty_file")
    im = Image.open(io.BytesIO(data))  # reads the header only; in memory, nothing to close
    check_declared_size(im, max_pixels, max_side)
    fmt, stored_mode = im.format or "unknown", im.mode
    im.load()  # the first frame only; a full load catches truncation that verify() misses
    out = to_8bit(_orient(im))
    return out, ImageInfo(out.width, out.height, stored_mode, fmt)


def probe(
    data: bytes, max_pixels: int = MAX_PIXELS, max_side: int | None = None
) -> ImageInfo | str:
    """Decode ``data`` with :func:`open_image`; its :class:`ImageInfo`, or the reason it is
    unusable (``empty_file``, ``too_big``, ``too_many_pixels``, ``decompression_bomb``,
    ``corrupt_header``, ``not_an_image``, ``truncated``, ``decode_error: <type>``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return open_image(data, max_pixels, max_side)[1]
    except ImageRejected as e:
        return e.reason
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "decompression_bomb"
    except Image.UnidentifiedImageError:
        return "corrupt_header" if data.startswith(_MAGIC) else "not_an_image"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e).lower()
        return "truncated" if "truncat" in msg else f"decode_error: {type(e).__name__}"


def read_bytes(root: str | Path, rel: str) -> bytes:
    """Bytes of pool entry ``rel``: a file under ``root``, or ``file.parquet::row`` for pools
    stored as a parquet of image bytes (column ``image``).

    Raises:
        ValueError: a parquet row whose ``image`` is null.
    """
    if PARQUET_SEP in rel:
        file, row = rel.rsplit(PARQUET_SEP, 1)
        root = Path(root)
        src = root if root.is_file() and root.name == file else root / file
        col = pl.read_parquet(src, columns=["image"])["image"]
        value = col[int(row)]
        if value is None:
            raise ValueError(f"{src} row {row}: image is null")
        return value
    return (Path(root) / rel).read_bytes()


def decode_gray_or_rgb(
    data: bytes, size: int, channels: int = 3, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode (:func:`open_image`) to a (channels, size, size) float32 array in [0, 1]
    (bilinear resize)."""
    im, _ = open_image(data, max_pixels)
    im = im.convert("L" if channels == 1 else "RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if channels == 1:
        return arr[None]
    return arr.transpose(2, 0, 1)
