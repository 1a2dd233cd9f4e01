"""A persistent, sharded embedding cache keyed by (image sha256, model hash).

Layout: ``<root>/<model_hash>/shard_XXXXX.npy`` (float16, (n, D)) + ``shard_XXXXX.parquet``
(column ``sha256``, row i ↔ matrix row i) + ``shard_XXXXX.record.json`` (size and sha256 of
both), plus ``model.json`` (the model's fingerprint) and a ``.lock`` file. Each shard file is
written atomically, the ``.npy`` first, the ``.parquet`` next and the record last, so a shard
exists only once all three are complete; a crash mid-run loses at most the shard being filled,
and the next run resumes from the shards already written. On open every shard is verified
against its record (size, then sha256): an incomplete, truncated or altered shard (no record,
a file missing or changed, row-count mismatch, unreadable file) is dropped with a warning naming
it, and its images are embedded again, never read from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ssl_core.curation.embed import Embedder, iter_embeddings
from ssl_core.utils.atomic import atomic_path
from ssl_core.utils.failpoints import failpoint
from ssl_core.utils.hashing import record_files, verify_record

log = logging.getLogger("sslops")
_SHARD = re.compile(r"^shard_(\d{5,})\.(npy|parquet|record\.json)$")
CACHE_DTYPE = np.float16


class EmbeddingCache:
    """Embeddings of one model, looked up by image sha256 and appended one shard at a time."""

    def __init__(self, root: str | Path, model_hash: str):
        if not re.fullmatch(r"[0-9a-f]{8,64}", model_hash):
            raise ValueError(f"model_hash must be a hex digest, got {model_hash!r}")
        self.dir = Path(root) / model_hash
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dim: int | None = None
        self._index: dict[str, tuple[int, int]] = {}
        self._shards: list[int] = []
        self._verified: dict[int, tuple] = {}  # shard → file stats when last verified
        self._scan()

    # -- reading -------------------------------------------------------------------------------
    def _paths(self, shard: int) -> tuple[Path, Path]:
        stem = self.dir / f"shard_{shard:05d}"
        return stem.with_suffix(".npy"), stem.with_suffix(".parquet")

    def _record(self, shard: int) -> Path:
        return self.dir / f"shard_{shard:05d}.record.json"

    def _verify(self, shard: int) -> None:
        """Raise ValueError unless the shard's files match its size+hash record (hashed once
        per process while their size and mtime stay the same)."""
        files = (*self._paths(shard), self._record(shard))
        stats = tuple(
            (p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None for p in files
        )
        if self._verified.get(shard) == stats:
            return
        problem = verify_record(self._record(shard))
        if problem is not None:
            raise ValueError(problem)
        self._verified[shard] = stats

    def _scan(self) -> None:
        """(Re)build the sha → (shard, row) index from the complete shards on disk."""
        self._index, self._shards, self.dim = {}, [], None
        numbers = sorted(
            {int(m.group(1)) for p in self.dir.iterdir() if (m := _SHARD.match(p.name))}
        )
        for k in numbers:
            npy, pq = self._paths(k)
            try:
                if not pq.is_file():
                    raise ValueError("no .parquet (interrupted before the shard was complete)")
                self._verify(k)
                shas = pl.read_parquet(pq, columns=["sha256"])["sha256"].to_list()
                arr = np.load(npy, mmap_mode="r")
                if arr.ndim != 2 or arr.shape[0] != len(shas):
                    raise ValueError(f"matrix shape {arr.shape} does not match {len(shas)} ids")
                if self.dim is not None and arr.shape[1] != self.dim:
                    raise ValueError(f"dimension {arr.shape[1]} != {self.dim} of earlier shards")
            except (OSError, ValueError, pl.exceptions.PolarsError) as e:
                log.warning(
                    "embedding cache: dropping shard %s (its images are embedded again): %s",
                    npy.with_suffix(""),
                    e,
                )
                for path in (npy, pq, self._record(k)):
                    path.unlink(missing_ok=True)
                self._verified.pop(k, None)
                continue
            self.dim = int(arr.shape[1])
            self._shards.append(k)
            for row, sha in enumerate(shas):
                self._index.setdefault(sha, (k, row))

    def __contains__(self, sha: object) -> bool:
        return sha in self._index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    def gather(self, shas: Sequence[str]) -> np.ndarray:
        """float32 (len(shas), D) matrix of cached embeddings, in the order of ``shas``."""
        missing = [s for s in shas if s not in self._index]
        if missing:
            raise KeyError(
                f"{len(missing)} sha256 not in the embedding cache {self.dir}, e.g. {missing[0]}"
            )
        out = np.zeros((len(shas), self.dim or 0), dtype=np.float32)
        loc = np.array([self._index[s] for s in shas], dtype=np.int64).reshape(-1, 2)
        for k in np.unique(loc[:, 0]):
            sel = np.flatnonzero(loc[:, 0] == k)
            arr = np.load(self._paths(int(k))[0], mmap_mode="r")
            out[sel] = arr[loc[sel, 1]]
        return out

    # -- writing -------------------------------------------------------------------------------
    def add(self, shas: Sequence[str], emb: np.ndarray) -> int:
        """Write one new shard (atomically) and index it; returns its number."""
        if emb.ndim != 2 or emb.shape[0] != len(shas):
            raise ValueError(f"embeddings {emb.shape} do not match {len(shas)} sha256 ids")
        if self.dim is not None and emb.shape[1] != self.dim:
            raise ValueError(f"embedding dim {emb.shape[1]} != cached dim {self.dim} in {self.dir}")
        with np.errstate(over="ignore"):
            half = emb.astype(CACHE_DTYPE)
        if not np.isfinite(half).all():
            raise ValueError(
                "non-finite embeddings (or values beyond float16 range) can't be cached"
            )
        k = max(self._shards, default=-1) + 1
        npy, pq = self._paths(k)
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, half)
        failpoint("embed.shard_half_written")
        with atomic_path(pq) as tmp:
            pl.DataFrame({"sha256": list(shas)}, schema={"sha256": pl.String}).write_parquet(tmp)
        record_files(self._record(k), [npy, pq])  # last: the shard is complete
        failpoint("embed.shard_written")
        self.dim = int(emb.shape[1])
        self._shards.append(k)
        for row, sha in enumerate(shas):
            self._index.setdefault(sha, (k, row))
        return k

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock on this model's cache (another run on the same model waits)."""
        with open(self.dir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self._scan()  # shards another process wrote while we waited
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class CachedEmbeddings:
    """Result of :func:`embed_with_cache`: embeddings of the decodable rows only."""

    emb: np.ndarray  # float32 (ok.sum(), D), rows in input order
    ok: np.ndarray  # bool (N,)
    cached: int  # unique sha256 found in the cache
    newly_embedded: int  # unique sha256 embedded (and cached) by this call


def embed_with_cache(
    cache: EmbeddingCache,
    root: str | Path,
    paths: Sequence[str],
    shas: Sequence[str | None],
    embedder: Embedder,
    shard_size: int = 4096,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "embed",
) -> CachedEmbeddings:
    """Embed the images whose sha256 is not cached yet, streaming them into new shards.

    At most ``shard_size + batch_size`` new embeddings are held in memory; full shards are
    flushed as they fill. Images that fail to decode (or have no sha256) are not cached and come
    back with ``ok`` False. Raises ``ValueError`` when no image at all could be embedded.
    """
    if shard_size <= 0:
        raise ValueError(f"shard_size must be > 0, got {shard_size}")
    if len(paths) != len(shas):
        raise ValueError(f"{len(paths)} paths but {len(shas)} sha256 values")
    todo: dict[str, str] = {}  # sha → first path holding it, for shas not cached yet
    seen: set[str] = set()
    for p, s in zip(paths, shas, strict=True):
        if s is not None and s not in seen:
            seen.add(s)
            if s not in cache:
                todo[s] = p
    n_cached, new_count = len(seen) - len(todo), 0
    todo_shas, todo_paths = list(todo), list(todo.values())
    buf_shas: list[str] = []
    buf: list[np.ndarray] = []
    n_buf = 0

    def flush(n: int) -> None:
        nonlocal buf, buf_shas, n_buf
        mat = np.concatenate(buf)
        cache.add(buf_shas[:n], mat[:n])
        buf, buf_shas, n_buf = ([mat[n:]] if n < len(mat) else []), buf_shas[n:], n_buf - n

    if todo:
        for idx, e in iter_embeddings(root, todo_paths, embedder, batch_size, progress, desc):
            failpoint("embed.batch")
            buf.append(e)
            buf_shas.extend(todo_shas[i] for i in idx)
            n_buf += len(idx)
            new_count += len(idx)
            while n_buf >= shard_size:
                flush(shard_size)
        if n_buf:
            flush(n_buf)
    ok = np.array([s is not None and s in cache for s in shas], dtype=bool)
    if not ok.any():
        raise ValueError(f"none of the {len(paths)} images under {root} could be embedded")
    emb = cache.gather([s for s, good in zip(shas, ok, strict=True) if good])
    return CachedEmbeddings(emb, ok, n_cached, new_count)
