"""The Dagster driver imports Great Expectations on a background thread, once per process,
while the first stages run (orchestration/runner.py: preload_checks)."""

from __future__ import annotations

import subprocess
import sys

PY = sys.executable


def test_gx_preload_runs_once_in_the_background() -> None:
    code = (
        "import sys\n"
        "from orchestration.runner import preload_checks\n"
        "assert 'great_expectations' not in sys.modules\n"
        "t = preload_checks()\n"
        "assert preload_checks() is t\n"
        "t.join(300)\n"
        "assert 'great_expectations.expectations' in sys.modules\n"
    )
    subprocess.run([PY, "-c", code], check=True, timeout=300)
