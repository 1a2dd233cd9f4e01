"""Ingest: scan a raw pool, decode-check every file, and describe it in a manifest.

The manifest has one row per candidate file: ``path`` (relative to the pool root), ``sha256``,
``bytes``, ``width``, ``height``, ``mode``, ``format``, ``status`` (``ok`` | ``quarantined``) and
``reason``. Broken files are quarantined with a reason, never dropped silently and never fatal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from ssl_core.config import IngestConfig
from ssl_core.data.images import PARQUET_SEP, ImageInfo, probe
from ssl_core.utils.hashing import sha256_bytes
from ssl_core.utils.progress import progress_bar

SCHEMA = {
    "path": pl.String,
    "sha256": pl.String,
    "bytes": pl.Int64,
    "width": pl.Int64,
    "height": pl.Int64,
    "mode": pl.String,
    "format": pl.String,
    "status": pl.String,
    "reason": pl.String,
}


def _parquet_entries(pool: Path) -> list[tuple[str, bytes | None, str | None]]:
    """Entries of a parquet pool; a null ``image`` is quarantined (``null_image``).

    Raises:
        ValueError: no ``image`` column, or one that does not hold bytes.
    """
    try:
        df = pl.read_parquet(pool, columns=["image"])
    except pl.exceptions.ColumnNotFoundError:
        raise ValueError(f"{pool}: a parquet pool needs a binary column named 'image'") from None
    except (OSError, pl.exceptions.PolarsError) as e:
        raise ValueError(f"{pool}: can't read the parquet pool ({e})") from e
    dtype = df.schema["image"]
    if dtype != pl.Binary:
        raise ValueError(
            f"{pool}: column 'image' must hold the encoded image files as bytes (parquet "
            f"binary), got {dtype}; write it with e.g. pl.Series('image', [open(f, 'rb')."
            "read() for f in files])"
        )
    return [
        (f"{pool.name}{PARQUET_SEP}{i}", b, None if b is not None else "null_image")
        for i, b in enumerate(df["image"])
    ]


def _printable(rel: str) -> tuple[str, str | None]:
    """``rel`` as UTF-8 text; a name that is not UTF-8 (Linux allows any bytes) is shown with
    backslash escapes and quarantined, since no later stage could open it by that text."""
    try:
        rel.encode("utf-8")
        return rel, None
    except UnicodeEncodeError:
        raw = rel.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace"), "name_not_utf8"


def _entry_reason(p: Path, pool_real: Path, exts: set[str]) -> str | None:
    """Why listed path ``p`` is not a candidate image, or None when it is one."""
    if p.is_symlink():
        if not p.resolve().is_relative_to(pool_real):
            return "symlink_outside_pool"
        if not p.exists():
            return "dangling_symlink"
    if not p.is_file():  # a symlink to a folder, a FIFO, a socket: never read
        return "not_a_regular_file"
    if p.suffix.lower() not in exts:
        return f"unsupported_extension: {p.suffix or '(none)'}"
    return None


def list_pool(pool: Path, cfg: IngestConfig) -> list[tuple[str, bytes | None, str | None]]:
    """Candidate entries as (relative path, bytes or None to read lazily, early reason).

    Hidden names (``.*``, at any depth) are skipped; symlinked folders are not descended into;
    a symlink is read only when it resolves to a regular file inside the pool (it is then
    another name of a pool file and dedup marks it as an exact duplicate), otherwise it is
    quarantined (``symlink_outside_pool``, ``dangling_symlink``, ``not_a_regular_file``).
    FIFOs, sockets and devices are skipped, never opened.
    """
    if pool.is_file() and pool.suffix == ".parquet":
        return _parquet_entries(pool)
    if not pool.is_dir():
        raise FileNotFoundError(
            f"raw pool {pool} not found: set paths.pool in params.yaml to a folder of images "
            "(or a parquet with an 'image' bytes column), or run `sslops raw_pool`"
        )
    exts = {e.lower() for e in cfg.extensions}
    pool_real = pool.resolve()
    out: list[tuple[str, bytes | None, str | None]] = []
    for p in sorted(pool.rglob("*")):
        if not p.is_symlink() and not p.is_file():
            continue  # folders (walked by rglob), FIFOs, sockets, devices
        if any(part.startswith(".") for part in p.relative_to(pool).parts):
            continue  # hidden files (.DS_Store, .gitignore, DVC temp files)
        rel, reason = _printable(p.relative_to(pool).as_posix())
        out.append((rel, None, reason or _entry_reason(p, pool_real, exts)))
    return out


def _row(rel: str, data: bytes | None, reason: str | None, cfg: IngestConfig) -> dict:
    row = dict.fromkeys(SCHEMA)
    row["path"] = rel
    if data is not None:
        row["sha256"] = sha256_bytes(data)
        row["bytes"] = len(data)
    if reason is None and data is not None:
        if len(data) > cfg.max_bytes:
            reason = f"too_large: {len(data)} bytes > ingest.max_bytes"
        else:
            info = probe(data, cfg.max_pixels, cfg.max_side)
            if isinstance(info, ImageInfo):
                row.update(width=info.width, height=info.height, mode=info.mode, format=info.format)
                if min(info.width, info.height) < cfg.min_side:
                    reason = f"too_small: {info.width}x{info.height} < ingest.min_side"
            else:
                reason = info
    row["status"] = "ok" if reason is None else "quarantined"
    row["reason"] = reason
    return row


def _read(path: Path, cfg: IngestConfig) -> tuple[bytes | None, str | None]:
    """The file's bytes, or why not: unreadable, or over ``ingest.max_bytes`` (then it is not
    read at all, so one huge file can't exhaust memory)."""
    try:
        size = path.stat().st_size
        if size > cfg.max_bytes:
            return None, f"too_large: {size} bytes > ingest.max_bytes"
        return path.read_bytes(), None
    except OSError as e:
        return None, f"unreadable: {e.strerror or type(e).__name__}"


def build_manifest(pool: str | Path, cfg: IngestConfig, progress: bool = True) -> pl.DataFrame:
    """Scan ``pool`` and return the manifest (one row per candidate file, sorted by path)."""
    pool = Path(pool)
    rows = []
    for rel, data, reason in progress_bar(
        list_pool(pool, cfg), desc="ingest", unit="file", enabled=progress
    ):
        if data is None and reason is None:
            data, reason = _read(pool / rel, cfg)
        rows.append(_row(rel, data, reason, cfg))
    return pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(schema=SCHEMA)


def describe_pool(pool: str | Path, cfg: IngestConfig) -> dict:
    """Cheap description of a pool without reading any image: candidate files, total bytes
    and a fingerprint of the listing (paths, sizes, modification times). Only reads."""
    pool = Path(pool)
    entries = list_pool(pool, cfg)
    h = hashlib.sha256()
    total = 0
    if pool.is_file():
        st = pool.stat()
        total = st.st_size
        h.update(f"{pool.name}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    else:
        for rel, _, _ in entries:
            try:
                st = (pool / rel).stat()
            except OSError:
                h.update(f"{rel}\tunreadable\n".encode())
                continue
            total += st.st_size
            h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return {"files": len(entries), "bytes": total, "listing_sha256": h.hexdigest()}
