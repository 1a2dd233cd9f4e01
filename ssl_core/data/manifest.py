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


def list_pool(pool: Path, cfg: IngestConfig) -> list[tuple[str, bytes | None, str | None]]:
    """Candidate entries as (relative path, bytes or None to read lazily, early reason)."""
    if pool.is_file() and pool.suffix == ".parquet":
        df = pl.read_parquet(pool)
        if "image" not in df.columns:
            raise ValueError(f"{pool}: a parquet pool needs a binary column named 'image'")
        return [(f"{pool.name}{PARQUET_SEP}{i}", b, None) for i, b in enumerate(df["image"])]
    if not pool.is_dir():
        raise FileNotFoundError(
            f"raw pool {pool} not found: set paths.pool in params.yaml to a folder of images "
            "(or a parquet with an 'image' bytes column), or run `sslops import-demo`"
        )
    exts = {e.lower() for e in cfg.extensions}
    out: list[tuple[str, bytes | None, str | None]] = []
    for p in sorted(pool.rglob("*")):
        if not p.is_file() and not p.is_symlink():
            continue
        rel = p.relative_to(pool).as_posix()
        if any(part.startswith(".") for part in p.relative_to(pool).parts):
            continue  # hidden files (.DS_Store, .gitignore, DVC temp files)
        if p.is_symlink() and not p.resolve().is_relative_to(pool.resolve()):
            out.append((rel, None, "symlink_outside_pool"))
        elif p.suffix.lower() not in exts:
            out.append((rel, None, f"unsupported_extension: {p.suffix or '(none)'}"))
        else:
            out.append((rel, None, None))
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
            info = probe(data)
            if isinstance(info, ImageInfo):
                row.update(width=info.width, height=info.height, mode=info.mode, format=info.format)
                side_min, side_max = min(info.width, info.height), max(info.width, info.height)
                if side_min < cfg.min_side:
                    reason = f"too_small: {info.width}x{info.height} < ingest.min_side"
                elif side_max > cfg.max_side:
                    reason = f"too_big: {info.width}x{info.height} > ingest.max_side"
            else:
                reason = info
    row["status"] = "ok" if reason is None else "quarantined"
    row["reason"] = reason
    return row


def build_manifest(pool: str | Path, cfg: IngestConfig, progress: bool = True) -> pl.DataFrame:
    """Scan ``pool`` and return the manifest (one row per candidate file, sorted by path)."""
    pool = Path(pool)
    rows = []
    for rel, data, reason in progress_bar(
        list_pool(pool, cfg), desc="ingest", unit="file", enabled=progress
    ):
        if data is None and reason is None:
            try:
                data = (pool / rel).read_bytes()
            except OSError as e:
                reason = f"unreadable: {e.strerror or type(e).__name__}"
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
