"""glibc keeps freed memory for the next large tensor once ``keep_freed_memory`` ran (issue #20).

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

_PROBE = """
import json, resource, sys
import torch
from ssl_core.utils.malloc import keep_freed_memory
on = keep_freed_memory() if sys.argv[1] == "call" else False

def step():  # a training step's pattern: large temporaries, freed at its end
    a = torch.empty(20 * 2**20).fill_(1.0)  # 80 MiB, above glibc's largest mmap threshold
    b = torch.empty(4 * 2**20).fill_(1.0)  # 16 MiB
    return float((a[: b.numel()] + b)[0])

step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"on": on, "faults": faults}))
"""

# 10 steps x (20 + 4 + 4) Mi floats: ~280,000 fresh 4 KiB pages when every tensor is a new mapping
_FRESH = 150_000


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True,
                         text=True, env={**os.environ, **env})  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_large_tensors_reuse_pages_only_when_kept() -> None:
    default = _probe("skip")
    kept = _probe("call")
    assert kept["on"] is True
    assert default["faults"] > _FRESH, default
    assert kept["faults"] < default["faults"] / 3, (kept, default)  # measured 20-60k vs 230-290k


def test_switch_off_leaves_glibc_as_it_is() -> None:
    off = _probe("call", SSLOPS_KEEP_FREED_MEMORY="0")
    assert off["on"] is False
    assert off["faults"] > _FRESH, off
