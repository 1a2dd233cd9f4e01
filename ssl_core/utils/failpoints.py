"""Failpoints: a testing hook that SIGKILLs the process at a named place in the code.

Set ``SSLOPS_FAILPOINT=<name>[:<n>][@<rank>|@job]`` in a process's environment and the
``n``-th call (default: the first) of ``failpoint("<name>")`` in that process sends it
``SIGKILL``: no ``finally`` block, no atomic-write clean-up, no flush runs, exactly as a
``kill -9`` or an OOM kill at that instant would. ``@<rank>``: only the process whose ``RANK``
environment variable (set by ``torchrun``) equals ``<rank>`` dies, e.g. one worker of a
training job; ``@job``: only a stage's job process (it has ``SSLOPS_JOB_ID``), not the stage
command that submitted it (both pass e.g. ``atomic.before_replace``).
Examples: ``SSLOPS_FAILPOINT=embed.shard_written:2`` (after the second embedding shard is
complete), ``SSLOPS_FAILPOINT=train.after_checkpoint@1`` (rank 1, after the first checkpoint).

The variable is read once, when this module is imported; unset (the normal case), a call is
one comparison with ``None`` and does nothing. Child processes inherit the variable, and each
counts its own hits; TorchX's ``local_cwd`` scheduler and ``torchrun`` pass the environment
on, so a stage command's failpoint also arms its job's processes. (A container scheduler does
not: the job's environment is the AppDef's.)

For tests only (``tests/integration/test_crash_anywhere.py``): it never changes what a stage
computes. :data:`NAMES` lists every failpoint in the code.
"""

from __future__ import annotations

import os
import re
import signal
import sys

ENV = "SSLOPS_FAILPOINT"

#: every failpoint in the code, and where it is
NAMES = {
    "atomic.before_replace": "a file is written under its temporary name, not yet renamed",
    "atomic.dir_before_replace": "a stage's output folder is complete, not yet swapped in",
    "embed.batch": "inside embedding: a batch embedded, its shard not written yet",
    "embed.shard_half_written": "a cache shard's matrix written, its ids and record not yet",
    "embed.shard_written": "a cache shard complete (matrix, ids, size+hash record)",
    "dedup.near_done": "near-duplicates found, decontamination not run yet",
    "dedup.before_swap": "dedup outputs written in the temporary folder, not swapped in",
    "kmeans.level_saved": "a k-means level's checkpoint written (hit n: after level n-1)",
    "kmeans.in_level": "inside a level's k-means, after its first run (hit n: level n-1)",
    "curate.before_swap": "the curated manifest written, not swapped in",
    "train.step": "a training step done, before any checkpoint of that step (both roles)",
    "train.after_checkpoint": "a checkpoint (and its size+hash record) written",
    "train.mid_outputs": "training done, model.safetensors exported, head and summary not yet",
    "report.partial": "metrics.json and plots written, report.md and report.html not yet",
}

_SPEC = re.compile(r"^(?P<name>[\w.\-]+)(?::(?P<hit>\d+))?(?:@(?P<where>\d+|job))?$")
_JOB_ENV = "SSLOPS_JOB_ID"  # ssl_core.lineage.JOB_ID_ENV: set in every stage job's environment


def _parse(value: str | None) -> tuple[str, int] | None:
    """``(name, hit)`` armed in this process, or None (unset, or another rank's)."""
    if not value:
        return None
    m = _SPEC.match(value.strip())
    if m is None:
        sys.exit(f"{ENV}={value!r}: expected <name>[:<n-th hit>][@<rank>|@job], e.g. embed.batch:2")
    if m["name"] not in NAMES:
        sys.exit(f"{ENV}={value!r}: unknown failpoint; known: {', '.join(sorted(NAMES))}")
    where = m["where"]
    if where == "job" and not os.environ.get(_JOB_ENV):
        return None
    if where not in (None, "job") and os.environ.get("RANK", "0") != where:
        return None
    return m["name"], int(m["hit"] or 1)


_ARMED = _parse(os.environ.get(ENV))
_hits = 0


def failpoint(name: str) -> None:
    """SIGKILL this process when ``name`` is armed by ``$SSLOPS_FAILPOINT`` and this is the
    armed hit; otherwise nothing (see the module docstring)."""
    if _ARMED is None or _ARMED[0] != name:
        return
    global _hits
    _hits += 1
    if _hits == _ARMED[1]:
        sys.stderr.write(f"{ENV}: SIGKILL at failpoint {name} (hit {_hits})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
