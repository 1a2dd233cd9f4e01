"""A user's image folder for end-to-end tests: real images (scikit-learn's digits), a few
broken files and a byte copy, with or without a folder-per-class layout; and a fingerprint
of every file in it to prove the graph never changed it."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def _img(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def make_image_folder(dest: Path, per_class: int = 30, class_folders: bool = False) -> Path:
    """``per_class`` digits of each class as 24x24 PNG/JPEG files, 2 broken files and a byte
    copy. ``class_folders``: ``dest/<digit>/...`` (ImageFolder); else a flat folder plus one
    sub-folder, which is not a class layout."""
    from sklearn.datasets import load_digits

    d = load_digits()
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for c in range(10):
        for i in np.flatnonzero(d.target == c)[:per_class]:
            arr = (d.images[i] * 16).clip(0, 255).astype(np.uint8).repeat(3, 0).repeat(3, 1)
            fmt, ext = ("JPEG", "jpg") if n % 5 == 0 else ("PNG", "png")
            if class_folders:
                rel = f"{c}/img {n:04d}.{ext}"  # a space in the name, as users have
            else:
                rel = f"img_{n:04d}.{ext}" if n % 3 else f"more/img_{n:04d}.{ext}"
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(_img(arr, fmt))
            n += 1
    top = dest / ("0" if class_folders else "")
    (top / "broken.png").write_bytes(b"\x89PNG truncated")
    (top / "notes.jpg").write_bytes(b"not an image at all")
    first = sorted(p for p in top.iterdir() if p.suffix == ".png" and p.name != "broken.png")[0]
    (top / f"copy_of_{first.name}").write_bytes(first.read_bytes())
    return dest


def fingerprint(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under ``root`` (files, folders, links): sha256 (files), mode and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            out[str(p.relative_to(root))] = (digest, st.st_mode, st.st_mtime_ns)
    return out
