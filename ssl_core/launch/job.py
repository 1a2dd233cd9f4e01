"""What a stage job runs: ``python -m ssl_core.launch.job <stage> --params FILE [--student N]``.

The launcher submits this (under ``torchrun`` when a stage asks for several processes); it
runs the stage's work exactly as an in-process call would and writes the same outputs and
``lineage.json`` (rank 0 only); clusters runs its distributed module
(``names.JOB_ENTRY_MODULES``). Rank 0 prints the stage's result as one JSON line, the last
line of the job's output, which the launcher reads back.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see cli.py)

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from ssl_core.config import ConfigError, load_params  # noqa: E402
from ssl_core.data.labels import LabelsError  # noqa: E402
from ssl_core.stages.names import JOB_ENTRY_MODULES, JOB_STAGES, STAGE_MODULES  # noqa: E402

#: prefix of the result line (so the launcher finds it among log lines)
RESULT_PREFIX = "SSLOPS_RESULT "


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssl_core.launch.job", description=__doc__)
    p.add_argument("stage", choices=sorted(JOB_STAGES))
    p.add_argument("--params", required=True, help="params file (the launcher's snapshot)")
    p.add_argument("--student", action="append", help="students only: build just these")
    a = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in ("sslops", "ssl_core"):
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    rank = int(os.environ.get("RANK", "0"))
    try:
        params = load_params(a.params)
        only = {"students": a.student} if a.student else {}
        module = importlib.import_module(JOB_ENTRY_MODULES.get(a.stage, STAGE_MODULES[a.stage]))
        stats = module.run(params, progress=rank == 0, **only)
    except (ConfigError, FileNotFoundError, ValueError, LabelsError) as e:
        print(f"sslops {a.stage} (job): error: {e}", file=sys.stderr, flush=True)
        return 2
    if rank == 0:
        print(RESULT_PREFIX + json.dumps({"stage": a.stage, **stats}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
