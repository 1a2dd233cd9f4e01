"""Free-space check before a stage writes: refuse to start rather than die mid-write.

A stage builds its outputs in a temporary sibling folder and swaps it in at the end
(:mod:`ssl_core.utils.atomic`), so while it runs the old and the new outputs both exist: the
free space it needs is the whole size of the new outputs. :func:`free_bytes` is the one probe
(tests patch it); :func:`require_space` raises :class:`NotEnoughSpace` with both numbers.
A write that still fails with ENOSPC (the estimate is an upper bound for the stage's own
outputs, not for other processes writing to the same disk) leaves the previous outputs as
they were: the temporary folder is removed and nothing was renamed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: margin kept free on top of a stage's estimate (logs, caches, the filesystem's own needs)
MARGIN_BYTES = 64 * 2**20
#: exit code of a stage refused for lack of space (EX_CANTCREAT)
EXIT_NO_SPACE = 73


class NotEnoughSpace(RuntimeError):
    """The filesystem of a stage's outputs has less free space than the stage will write."""

    exit_code = EXIT_NO_SPACE

    def __init__(self, message: str, folder: Path, need: int, free: int):
        super().__init__(message)
        self.folder, self.need, self.free = folder, need, free


def human(n: float) -> str:
    """``1.5 GiB``-style size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def existing_parent(path: str | Path) -> Path:
    """``path`` or its nearest existing ancestor (an output folder may not exist yet)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | Path) -> int:
    """Bytes available to this user on the filesystem holding ``path`` (the one probe)."""
    return shutil.disk_usage(existing_parent(path)).free


def require_space(folder: str | Path, need: int, what: str, stage: str) -> int:
    """Raise :class:`NotEnoughSpace` unless ``need`` + :data:`MARGIN_BYTES` bytes are free on
    the filesystem of ``folder``; returns the free bytes.

    Args:
        folder: where the stage writes (its output folder; need not exist yet).
        need: the stage's upper-bound estimate of what it writes there, in bytes.
        what: how the estimate was made (quoted in the message).
        stage: the command, for the message (``sslops embed``).
    """
    free = free_bytes(folder)
    if free >= need + MARGIN_BYTES:
        return free
    where = existing_parent(folder)
    msg = (
        f"not enough free space for {stage}: it writes up to {human(need)} (+ {human(MARGIN_BYTES)}"
        f" margin) to {folder}, but the filesystem of {where} has {human(free)} free\n"
        f"  estimate: {what}\n"
        "  free space there (delete old job folders under data/.jobs, data/.cache, unused "
        "outputs), or point paths.* in params.yaml at a larger disk; nothing was written"
    )
    raise NotEnoughSpace(msg, Path(folder), need, free)
