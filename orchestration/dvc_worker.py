"""A warm DVC: one interpreter that runs many ``dvc`` commands (started by ``dvc_calls.py``).

DVC and Dagster cannot share a virtualenv (DVC's antlr4 pin breaks Dagster's asset selection),
so the Dagster process cannot import DVC. A ``dvc`` process per command paid ~0.8 s of
start-up and imports each time (15+ commands per full run; measured in
``benchmarks/results/orchestration_overhead_tiny.md``). This script runs under DVC's own
interpreter (``.venv-dvc/bin/python -I -u dvc_worker.py --mark MARK``) and imports nothing but
DVC and the standard library. It reads one JSON request per line,
``{"argv": [...], "cwd": "...", "env": {...}}``, runs ``dvc.cli.main(argv)`` in that folder
with exactly that environment, as a ``dvc`` process would, and ends the request's output on
stdout with the line ``MARK <exit code>``. It exits when its input closes.

Requests come on the inherited stdin, which is then replaced by ``/dev/null``: a stage command
that DVC starts inherits file descriptor 0 and must not read the requests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TextIO


def _swap_stdin() -> TextIO:
    """The request stream (a duplicate of stdin); fd 0 becomes ``/dev/null``."""
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return requests


def _run(main, argv: list[str]) -> int:
    try:
        return int(main(argv) or 0)
    except SystemExit as e:  # argparse: a usage error or --help
        return e.code if isinstance(e.code, int) else 1


def serve(mark: str) -> None:
    from dvc.cli import main

    requests = _swap_stdin()
    home = os.getcwd()
    for line in requests:
        if not line.strip():
            continue
        req = json.loads(line)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(req.get("env") or saved)
        try:
            os.chdir(req.get("cwd") or home)
            rc = _run(main, [str(a) for a in req["argv"]])
        except OSError as e:  # e.g. the project folder is gone
            print(f"dvc worker: {e}", flush=True)
            rc = 1
        finally:
            os.environ.clear()
            os.environ.update(saved)
        sys.stderr.flush()
        print(f"\n{mark} {rc}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mark", required=True, help="the line prefix that ends a request's output")
    serve(ap.parse_args().mark)
