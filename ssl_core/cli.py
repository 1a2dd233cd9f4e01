"""``sslops``: one subcommand per stage of the graph. DVC and Dagster both call these.

Examples::

    sslops use-folder --pool ~/photos [--labels auto|none|folders|labels.csv]
    sslops use-demo               # back to the demo data (data.source: demo)
    sslops import-demo            # Fashion-MNIST → data/demo/pool + data/demo/eval
    sslops ingest                 # pool → data/manifest/raw_manifest.parquet (+ eval set)
    sslops check manifest         # GX suite; non-zero exit when it fails
    sslops embed && sslops dedup && sslops cluster && sslops curate
    sslops train-teacher && sslops distill && sslops evaluate
    sslops lineage teacher [--json] [--paths-out images.csv]   # audit an artifact

embed, train-teacher and distill run as TorchX jobs on ``launch.scheduler`` (local_cwd: this
machine; kubernetes: a Volcano job) and wait for them.

Every parameter comes from ``params.yaml`` (``--params`` to use another file).
"""

from __future__ import annotations

import os

# Before anything imports torch: spinning OpenMP threads on a busy 2-core machine made training
# 4x slower (3.4 vs 14 img/s, measured); passive waiting avoids it (see ssl_core.launch.job).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from ssl_core.config import ConfigError, Params, load_params
from ssl_core.data.labels import LabelsError
from ssl_core.launch.launcher import JobFailed, JobInterrupted
from ssl_core.launch.settings import JOB_STAGES

STAGES = {
    "import-demo": "ssl_core.stages.import_demo",
    "ingest": "ssl_core.stages.ingest",
    "embed": "ssl_core.stages.embed",
    "dedup": "ssl_core.stages.dedup",
    "cluster": "ssl_core.stages.cluster",
    "curate": "ssl_core.stages.curate",
    "train-teacher": "ssl_core.stages.train_teacher",
    "distill": "ssl_core.stages.distill",
    "evaluate": "ssl_core.stages.evaluate",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sslops", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)
    for name, module in STAGES.items():
        sub.add_parser(name, help=f"run stage {name} ({module.rsplit('.', 1)[1]})")
    use = sub.add_parser("use-folder", help="point params.yaml at your own images (read-only)")
    use.add_argument("--pool", required=True, help="folder of images, or a .parquet pool")
    use.add_argument(
        "--labels",
        default="auto",
        help="auto (default: detect), none, folders, or a labels CSV/parquet / eval folder",
    )
    sub.add_parser("use-demo", help="point params.yaml back at the demo data")
    sub.add_parser("plan", help="print the data source, pool size and the auto sizes")
    spec = sub.add_parser(
        "job-spec", help="print what a job stage would submit to launch.scheduler (no submit)"
    )
    spec.add_argument("stage", choices=sorted(JOB_STAGES))
    spec.add_argument("--scheduler", help="render for this scheduler instead (e.g. kubernetes)")
    chk = sub.add_parser("check", help="run a Great Expectations suite on a stage's outputs")
    chk.add_argument(
        "suite", choices=["manifest", "dedup", "curated", "teacher", "students", "report"]
    )
    lin = sub.add_parser(
        "lineage",
        help="audit an artifact: commit, params, input hashes up to the raw pool, its images",
    )
    lin.add_argument(
        "target",
        help="asset name (teacher, curated_dataset, students/<name>, ...) or a path in an "
        "output folder (e.g. data/teacher/model.safetensors)",
    )
    lin.add_argument("--json", action="store_true", help="one JSON object on stdout")
    lin.add_argument(
        "--paths-out",
        metavar="FILE",
        help="write every raw image path with its reason (used or why dropped): .csv or .parquet",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in ("sslops", "ssl_core"):  # our progress messages; third-party libraries stay quiet
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    progress = not args.quiet and os.environ.get("SSLOPS_NO_PROGRESS") != "1"
    try:
        if args.command in ("use-folder", "use-demo", "plan"):
            from ssl_core import use_data

            if args.command == "use-folder":
                print(use_data.use_folder(Path(args.params), args.pool, args.labels))
            elif args.command == "use-demo":
                print(use_data.use_demo(Path(args.params)))
            else:
                print(use_data.plan(Path(args.params)))
            return 0
        params = load_params(args.params)
        if args.command == "job-spec":
            from ssl_core.launch.stage_job import render_stage_job

            if args.scheduler:
                launch = params.launch.model_copy(update={"scheduler": args.scheduler})
                params = params.model_copy(update={"launch": launch})
            print(render_stage_job(params, args.stage))
            return 0
        if args.command == "lineage":
            return _lineage(params, args)
        if args.command == "check":
            from ssl_core.stages import checks

            result = checks.run(params, args.suite)
            print(result.summary())
            return 0 if result.success else 1
        if args.command in JOB_STAGES:  # the work runs as a TorchX job (launch.scheduler)
            from ssl_core.launch.stage_job import run_stage_job

            stats = run_stage_job(params, args.params, args.command)
        else:
            stats = importlib.import_module(STAGES[args.command]).run(params, progress=progress)
        print(json.dumps({"stage": args.command, **stats}, default=str))
        return 0
    except JobFailed as e:
        return _fail(args.command, str(e), 1)
    except JobInterrupted as e:
        return _fail(args.command, f"interrupted ({e}); its job was cancelled", 130)
    except (ConfigError, FileNotFoundError, ValueError, LabelsError) as e:
        return _fail(args.command, str(e), 2)


def _lineage(params: Params, args: argparse.Namespace) -> int:
    """Exit 0: consistent; 1: a mismatch or a stage not run; 2: bad target or --paths-out."""
    from ssl_core.audit import audit

    try:
        result = audit(params, args.target, args.paths_out)
    except ValueError as e:
        if args.json:
            print(json.dumps({"error": str(e)}))
        print(f"sslops lineage: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), default=str) if args.json else result.text())
    return 0 if result.verdict == "consistent" else 1


def _fail(command: str, error: str, code: int) -> int:
    msg = f"sslops {command}: error: {error}"
    print(msg, file=sys.stderr)
    if not sys.stdout.isatty():
        print(msg)  # orchestrators capture stdout into their logs and failure messages
    return code


if __name__ == "__main__":
    sys.exit(main())
