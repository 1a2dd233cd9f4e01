"""Run a measurement in a fresh interpreter, so its peak RSS (``ru_maxrss``: faiss, BLAS and
oneDNN allocations included, which tracemalloc cannot see) is its own.

A benchmark script calls itself with ``--worker <json spec>``; the worker prints its result as
the last stdout line (JSON).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_worker(script: str, spec: dict) -> dict:
    """``python script --worker <spec>`` in a new process; its last stdout line, parsed."""
    p = subprocess.run(
        [sys.executable, script, "--worker", json.dumps(spec)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if p.returncode != 0:
        raise RuntimeError(f"worker failed: {spec}\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(json.dumps(r), flush=True)
    return r
