"""The failpoint hook: SIGKILL at the n-th hit of a named place (one rank, when asked), nothing
when unset, a clear error for a typo; every name used in the code is documented."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from ssl_core.utils import failpoints

REPO = Path(__file__).resolve().parents[3]
CODE = (
    "from ssl_core.utils.failpoints import failpoint\n"
    "for i in range(3):\n"
    "    failpoint('embed.batch'); print('passed', i, flush=True)\n"
)


def _run(value: str | None, rank: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (failpoints.ENV, "RANK")}
    if value is not None:
        env[failpoints.ENV] = value
    if rank is not None:
        env["RANK"] = rank
    return subprocess.run(
        [sys.executable, "-c", CODE], cwd=REPO, env=env, capture_output=True, text=True
    )


def test_kill_at_the_nth_hit():
    p = _run("embed.batch:2")
    assert p.returncode == -signal.SIGKILL
    assert p.stdout.split("\n")[:-1] == ["passed 0"]
    assert "SIGKILL at failpoint embed.batch (hit 2)" in p.stderr


def test_unset_or_other_name_or_other_rank_does_nothing():
    for value, rank in ((None, None), ("dedup.near_done", None), ("embed.batch@1", "0")):
        p = _run(value, rank)
        assert p.returncode == 0 and p.stdout.count("passed") == 3, (value, rank)
    assert _run("embed.batch@1", "1").returncode == -signal.SIGKILL
    assert _run("embed.batch@job").returncode == 0  # not a stage job's process


def test_a_typo_fails_naming_the_known_failpoints():
    p = _run("embed.btach")
    assert p.returncode == 1 and "unknown failpoint" in p.stderr and "embed.batch" in p.stderr
    assert "expected <name>" in _run("embed.batch:x").stderr


def test_every_failpoint_in_the_code_is_documented():
    used = set()
    for path in (REPO / "ssl_core").rglob("*.py"):
        used |= set(re.findall(r'failpoint\("([\w.\-]+)"\)', path.read_text()))
    assert used == set(failpoints.NAMES)
