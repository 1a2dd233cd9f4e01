"""Images as users meet them in scraped pools: every format decodes to the pixels a person
sees, the same way in ingest and in the datasets, or is quarantined with a specific reason.

Every case is a real file written here with PIL (or by hand, for what PIL cannot write)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from ssl_core.config import IngestConfig
from ssl_core.data import images
from ssl_core.data.dataset import ImageDataset
from ssl_core.data.images import (
    ALPHA_BACKGROUND,
    ImageInfo,
    ImageRejected,
    decode_gray_or_rgb,
    open_image,
    probe,
)
from ssl_core.data.manifest import build_manifest

RED = (220, 30, 40)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(w: int = 24, h: int = 16) -> Image.Image:
    """An RGB image whose every pixel differs, so a rotation or flip is visible."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 10, y * 15, (x + y) * 5], -1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(open_image(data)[0])


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_by_hand(w: int, h: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A PNG from raw filtered scanlines (each row starts with filter byte 0)."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw_rows, 9))
        + _png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- formats
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_common_formats_decode(fmt):
    im = Image.new("RGB", (20, 12), RED)
    kw = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    info = probe(encode(im, fmt, **kw))
    assert isinstance(info, ImageInfo) and (info.width, info.height) == (20, 12)
    assert info.format == fmt
    got = pixels(encode(im, fmt, **kw))
    assert got.shape == (12, 20, 3)
    assert np.abs(got.astype(int) - RED).max() <= 12  # lossy codecs and the GIF palette


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, (0, 0, 255), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert isinstance(probe(data), ImageInfo)
    assert np.abs(pixels(data).astype(int) - RED).max() <= 12


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_grey_is_scaled_not_clipped(fmt):
    arr = np.array([[0, 257, 32896, 65535]] * 8, np.uint16).repeat(2, 1)  # 8 x 8
    data = encode(Image.fromarray(arr), fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    info = probe(data)
    assert isinstance(info, ImageInfo) and info.mode.startswith("I;16")
    got = pixels(data)
    assert got.dtype == np.uint8 and got[0].tolist() == [0, 0, 1, 1, 128, 128, 255, 255]


def test_16bit_rgb_png_is_scaled():
    # PIL cannot write 16-bit RGB: scanlines by hand, value 0x8000 = mid grey, 0xFFFF = white
    row = b"\x00" + (b"\x80\x00" * 3 + b"\xff\xff" * 3) * 4
    data = png_by_hand(8, 8, 16, 2, row * 8)
    got = pixels(data)
    assert got.shape == (8, 8, 3)
    assert got[0, 0].tolist() == [128, 128, 128] and got[0, 1].tolist() == [255, 255, 255]


def test_cmyk_jpeg_and_tiff_look_right():
    cmyk = Image.new("RGB", (16, 16), RED).convert("CMYK")
    for fmt in ("JPEG", "TIFF"):
        data = encode(cmyk, fmt)
        info = probe(data)
        assert isinstance(info, ImageInfo) and info.mode == "CMYK"
        assert np.abs(pixels(data).astype(int) - RED).max() <= 12, fmt


def test_palette_with_transparency_composited_on_the_background():
    p = Image.new("P", (8, 8), 0)
    p.putpalette([*RED, 0, 0, 0] + [0] * 762)
    p.putpixel((0, 0), 1)  # index 1 is black but declared transparent below
    data = encode(p, "PNG", transparency=1)
    got = pixels(data)
    assert got[0, 0].tolist() == list(ALPHA_BACKGROUND)  # not the hidden black
    assert got[4, 4].tolist() == list(RED)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_a_fixed_background(mode):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., :3] = (0, 0, 0)  # black under the transparency: dropping alpha would show it
    arr[:, :4, 3] = 255  # left half opaque black, right half fully transparent
    arr[:, 4:, 3] = 0
    im = Image.fromarray(arr, "RGBA")
    data = encode(im if mode == "RGBA" else im.convert("LA"), "PNG")
    got = pixels(data)
    assert got[0, 0].tolist() == [0, 0, 0]
    assert got[0, 7].tolist() == list(ALPHA_BACKGROUND)
    grey = decode_gray_or_rgb(data, 8, channels=1)
    assert grey[0, 0, 0] == 0.0 and grey[0, 0, 7] == 1.0


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_applied_everywhere(orientation, tmp_path):
    upright = gradient()
    # store the image so that applying ``orientation`` brings it back upright
    inverse = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
               8: Image.Transpose.ROTATE_270}[orientation]  # fmt: skip
    stored = upright.transpose(inverse) if inverse else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "PNG", exif=exif)
    info = probe(data)
    assert isinstance(info, ImageInfo) and (info.width, info.height) == upright.size
    assert np.array_equal(pixels(data), np.asarray(upright))
    # the training / eval dataset sees the same upright pixels as ingest measured
    (tmp_path / "x.png").write_bytes(data)
    x, _ = ImageDataset(tmp_path, ["x.png"], size=upright.size[0])[0]
    ref = decode_gray_or_rgb(encode(upright, "PNG"), upright.size[0])
    assert np.array_equal(x.numpy(), ref)


def test_one_decode_path_for_ingest_and_datasets(monkeypatch, tmp_path):
    calls = []
    real = images.open_image

    def spy(data, *a, **kw):
        calls.append(len(data))
        return real(data, *a, **kw)

    monkeypatch.setattr(images, "open_image", spy)
    data = encode(gradient(), "PNG")
    probe(data)
    decode_gray_or_rgb(data, 8)
    (tmp_path / "a.png").write_bytes(data)
    ImageDataset(tmp_path, ["a.png"], size=8)[0]
    assert calls == [len(data)] * 3


# --------------------------------------------------------------------------- bombs
def png_bomb(side: int) -> bytes:
    """A real PNG declaring side x side 1-bit pixels of one colour (rows compress ~1000:1)."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture
def no_full_decode(monkeypatch):
    """Fail the test if any image is decoded (ImageFile.load) while active."""

    def refuse(self):
        raise AssertionError(f"decoded a {self.size} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_decompression_bomb_never_decodes(no_full_decode):
    data = png_bomb(20_000)  # 400 M pixels declared, ~50 KB on disk: over PIL's guard
    assert len(data) < 200_000
    assert probe(data) == "decompression_bomb"
    # 100k x 100k declared in a few bytes (only the first rows present): refused at the header
    tiny = png_by_hand(100_000, 100_000, 1, 0, b"\0" * 12_501 * 4)
    assert len(tiny) < 5_000 and probe(tiny) == "decompression_bomb"


def test_declared_size_checked_against_ingest_limits_before_decoding(no_full_decode):
    data = png_bomb(4000)  # 16 M pixels: under PIL's guard, over our caps
    assert probe(data, max_pixels=1_000_000).startswith("too_many_pixels: 4000x4000")
    assert probe(data, max_side=1024).startswith("too_big: 4000x4000 > ingest.max_side")
    with pytest.raises(ImageRejected, match="too_many_pixels"):
        decode_gray_or_rgb(data, 8, max_pixels=1_000_000)


def test_bomb_in_a_pool_is_quarantined_and_dataset_skips_it(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_bomb(4000))
    (tmp_path / "ok.png").write_bytes(encode(gradient(), "PNG"))
    df = build_manifest(tmp_path, IngestConfig(max_pixels=1_000_000), progress=False)
    reasons = dict(df.select("path", "reason").iter_rows())
    assert reasons == {"bomb.png": "too_many_pixels: 4000x4000 > ingest.max_pixels (1000000)",
                       "ok.png": None}  # fmt: skip
    # a bomb that reaches a dataset anyway (e.g. the file changed after ingest) costs one
    # sample, not the run, and is not decoded there either
    (tmp_path / "bomb.png").write_bytes(png_bomb(20_000))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
        assert ImageDataset(tmp_path, ["bomb.png"], size=8)[0] is None


def test_huge_file_not_read_into_memory(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    big.write_bytes(encode(gradient(), "PNG") + b"\0" * 5000)
    read = []
    monkeypatch.setattr(type(big), "read_bytes", lambda self: read.append(self) or b"")
    df = build_manifest(tmp_path, IngestConfig(max_bytes=1000), progress=False)
    assert df["reason"][0].startswith("too_large: ") and read == []
