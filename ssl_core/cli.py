"""``sslops``: one subcommand per stage of the graph. DVC and Dagster both call these.

Examples::

    sslops use-folder --pool ~/photos [--labels auto|none|folders|labels.csv]
    sslops use-demo               # back to the demo data (data.source: demo)
    sslops raw_pool               # Fashion-MNIST → data/demo/pool + data/demo/eval
    sslops manifest               # pool → data/manifest/raw_manifest.parquet (+ eval set)
    sslops check manifest         # GX suite; non-zero exit when it fails
    sslops embeddings && sslops dedup && sslops clusters && sslops curated
    sslops teacher && sslops students && sslops report
    sslops students --student tiny_student   # one student only (its folder alone is rewritten)
    sslops lineage teacher [--json] [--paths-out images.csv]   # audit an artifact

Each stage command is the name of its graph node: the Dagster asset and the DVC stage carry
the same name (``ssl_core/stages/names.py``). embeddings, teacher and students run as TorchX
jobs on ``launch.scheduler`` (local_cwd: this machine; kubernetes: a Volcano job) and wait;
so does clusters when ``launch.clusters`` asks for more than one rank.

Every parameter comes from ``params.yaml`` (``--params`` to use another file).
"""

from __future__ import annotations

import os

# Before anything imports torch: spinning OpenMP threads on a busy 2-core machine made training
# 4x slower (3.4 vs 14 img/s, measured); passive waiting avoids it (see ssl_core.launch.job).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import importlib
import json
import logging
import sys
from pathlib import Path

from ssl_core.config import ConfigError, Params, load_params
from ssl_core.data.labels import LabelsError
from ssl_core.launch.launcher import JobFailed, JobInterrupted
from ssl_core.stages.guard import GUARD_ERRORS, command_line, disk_full, stage_guard
from ssl_core.stages.names import JOB_STAGES, RENAMED, canonical
from ssl_core.stages.names import STAGE_MODULES as STAGES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sslops", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="when another run holds the data folder's lock, wait up to this long for it "
        "(inf: forever; default $SSLOPS_LOCK_WAIT or 0: fail at once naming the holder)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, module in STAGES.items():
        aliases = [name.replace("_", "-")] if "_" in name else []
        stage = sub.add_parser(name, aliases=aliases, help=f"build {name} ({module})")
        if name == "students":
            stage.add_argument(
                "--student",
                action="append",
                metavar="NAME",
                help="only this student of distill.students (repeatable; default: all); the "
                "other students' folders are left untouched",
            )
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
        help="asset name (teacher, curated, students/<name>, ...) or a path in an "
        "output folder (e.g. data/teacher/model.safetensors)",
    )
    lin.add_argument("--json", action="store_true", help="one JSON object on stdout")
    lin.add_argument(
        "--paths-out",
        metavar="FILE",
        help="write every raw image path with its reason (used or why dropped): .csv or .parquet",
    )
    return p


def _renamed(argv: list[str]) -> str | None:
    """The error for an old stage command name in ``argv`` (None: not one)."""
    valued = {  # top-level options that take a value (--params FILE, ...)
        o for a in _parser()._actions if a.option_strings and a.nargs != 0 for o in a.option_strings
    }
    words = iter(argv)
    for word in words:
        if word in valued:
            next(words, None)
        elif not word.startswith("-"):  # the subcommand
            if word in RENAMED:
                new = RENAMED[word]
                return f"sslops: '{word}' was renamed '{new}' (run `sslops {new}`)"
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    renamed = _renamed(argv)
    if renamed:
        print(renamed, file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    args.command = canonical(args.command)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in ("sslops", "ssl_core"):  # our progress messages; third-party libraries stay quiet
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    progress = not args.quiet and os.environ.get("SSLOPS_NO_PROGRESS") != "1"
    guard = contextlib.ExitStack()  # stage commands: artifact-root lock + free space
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

            guard.enter_context(stage_guard(params, command_line(argv), None, args.wait))
            result = checks.run(params, args.suite)
            print(result.summary())
            return 0 if result.success else 1
        guard.enter_context(
            stage_guard(params, command_line(argv), STAGES[args.command], args.wait)
        )
        if params.launch.runs_as_job(args.command):  # a TorchX job on launch.scheduler
            from ssl_core.launch.stage_job import run_stage_job

            stats = run_stage_job(params, args.params, args.command, _only(args, params))
        else:
            module = importlib.import_module(STAGES[args.command])
            stats = module.run(params, progress=progress, **_only(args, params))
        print(json.dumps({"stage": args.command, **stats}, default=str))
        return 0
    except JobFailed as e:
        return _fail(args.command, str(e), 1)
    except JobInterrupted as e:
        return _fail(args.command, f"interrupted ({e}); its job was cancelled", 130)
    except (ConfigError, FileNotFoundError, ValueError, LabelsError) as e:
        return _fail(args.command, str(e), 2)
    except GUARD_ERRORS as e:  # another run holds the lock (75), too little disk (73)
        return _fail(args.command, str(e), e.exit_code)
    except OSError as e:  # a disk that fills up mid-write: the previous outputs stand
        full = disk_full(command_line(argv), e)
        if full is None:
            raise
        return _fail(args.command, str(full), full.exit_code)
    finally:
        guard.close()


def _only(args: argparse.Namespace, params: Params) -> dict:
    """``{"students": [...]}`` when ``sslops students --student NAME`` picked some (each must
    be in ``distill.students``: checked here, before a job is submitted)."""
    picked = getattr(args, "student", None)
    unknown = [s for s in picked or () if s not in params.distill.students]
    if unknown:
        raise ValueError(f"{unknown} not in distill.students {params.distill.students}")
    return {"students": picked} if picked else {}


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
