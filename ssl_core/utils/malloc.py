"""Keep freed memory inside the process on glibc, so large tensors reuse warm pages (issue #20).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and returns it to the kernel on ``free``; the kernel then zero-fills every page of the next such
tensor on first touch. A CPU training step allocates and frees ~1-1.6 GB of such tensors (the
65,536-prototype score matrices of the DINO/iBOT heads and losses, stacked activations): with
glibc's defaults that measured 240,000-410,000 minor page faults and 0.6-1.1 s of kernel time per
ViT-S/14 step on 2 cores; with the setting below 7,000-18,000 and 0.04-0.07 s (docs/training.md,
"Training throughput on CPU"). It is what a caching allocator (jemalloc/tcmalloc,
as Intel's PyTorch CPU tuning guide recommends) gives, without a preloaded library:

* ``M_MMAP_MAX = 0``: every allocation comes from the heap, none from a private mapping;
* ``M_TRIM_THRESHOLD`` = 2 GiB: freed heap memory stays mapped for the next step.

The cost: the process keeps its high-water mark (peak RSS 4.26 vs 4.01 GB over 30 ViT-S/14
steps, flat over the last 8). Values are untouched; only where memory comes from changes.
Other C libraries (macOS, musl) are left as they are. ``SSLOPS_KEEP_FREED_MEMORY=0`` switches it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

__all__ = ["ENV_SWITCH", "keep_freed_memory"]

log = logging.getLogger(__name__)

ENV_SWITCH = "SSLOPS_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: the largest it accepts


def keep_freed_memory() -> bool:
    """Set glibc's ``M_MMAP_MAX`` to 0 and ``M_TRIM_THRESHOLD`` to 2 GiB for this process (module
    docstring). Returns whether it is now set; False on other C libraries, when
    ``SSLOPS_KEEP_FREED_MEMORY=0``, or if glibc refuses."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    if not ok:
        log.warning("glibc refused mallopt; large tensors keep coming from fresh mappings")
    return ok
