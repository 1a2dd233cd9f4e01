"""A throw-away copy of the project with a tiny demo pool, for end-to-end runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ssl_core.data.demo_pool import TINY_DEMO

REPO = Path(__file__).resolve().parents[2]

TINY = {
    "demo": TINY_DEMO,
    "cluster": {"levels": [12, 4], "n_resampling_steps": 1},
    "curate": {"target_size": 80, "min_cluster_entropy": 0.5},
    "train": {"epochs": 1, "max_steps": 3, "batch_size": 16},
    "distill": {"epochs": 1, "max_steps": 2, "batch_size": 16},
}


def dvc_bin() -> str | None:
    cand = os.environ.get("SSLOPS_DVC") or str(REPO / ".venv-dvc" / "bin" / "dvc")
    return cand if Path(cand).is_file() else shutil.which("dvc")


def make_tiny_project(dest: Path, overrides: dict | None = None, with_dvc: bool = True) -> Path:
    """Copy code + pipeline files into ``dest``; write params.yaml with tiny sizes."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        REPO / "ssl_core", dest / "ssl_core", ignore=shutil.ignore_patterns("__pycache__")
    )
    for f in ("dvc.yaml", ".dvcignore", ".gitignore", "demo/dvc.yaml", "data/labels/README.md"):
        if (REPO / f).exists():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / f, dest / f)
    (dest / "data").mkdir(exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in {**TINY, **(overrides or {})}.items():
        params.setdefault(section, {}).update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if with_dvc:
        run(["git", "init", "-q"], dest)
        run(
            [
                "git",
                "-c",
                "user.email=t@t",
                "-c",
                "user.name=t",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "init",
            ],
            dest,
        )
        run([dvc_bin(), "init", "-q"], dest)
        run([dvc_bin(), "config", "core.analytics", "false"], dest)
    return dest


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), e.get("PATH", "")])
    e["SSLOPS_NO_PROGRESS"] = "1"
    return e


def run(cmd: list[str], cwd: Path) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        )
    return p.stdout + p.stderr


def dagster_full_pass(project: Path, mode: str = "dvc") -> list:
    """The whole graph through Dagster as ``make demo`` runs it (``ssl_upstream``, one
    ``ssl_students`` run per student, ``ssl_report``) on ``project``, in an ephemeral instance;
    returns each run's result (it stops at the first failed run)."""
    import dagster as dg

    from orchestration.defs.assets import make_assets
    from orchestration.defs.checks import CHECKS
    from orchestration.defs.jobs import JOBS
    from orchestration.defs.resources import StageRunner
    from orchestration.pipeline import run_steps, student_names

    students = student_names(project / "params.yaml")
    defs = dg.Definitions(
        assets=make_assets(students),
        asset_checks=CHECKS,
        jobs=JOBS,
        resources={"runner": StageRunner(mode=mode, project=str(project))},
    )
    return run_steps(defs, dg.DagsterInstance.ephemeral(), students)
