"""What Dagster + DVC (+ the TorchX jobs) cost over calling the stage functions directly.

Copies of the project, built from scratch one after the other in one run:

- **orchestrated**: ``python -m orchestration.pipeline`` (what ``make demo`` runs: each asset runs
  ``dvc repro --single-item <stage>``, which runs ``sslops <stage>``; embed, teacher and
  distill submit ``local_cwd`` TorchX jobs; GX checks are blocking asset checks);
- **baseline** (``--baseline-rev REV``): the same, with ``orchestration/`` as of git revision
  ``REV`` (before/after of an orchestration change, side by side on the same machine load);
- **direct**: one Python process calling every stage function and GX suite in graph order.

Each run's time is split into the stages' own work (``duration_s`` in every ``lineage.json``,
measured inside the stage) and the rest, so the overhead is also measured *within* the
orchestrated run, independent of how busy the machine was during the other one.
``--breakdown`` then times the pieces of one step's fixed cost on the orchestrated project
(:func:`breakdown`).

Usage::

    .venv/bin/python benchmarks/orchestration_overhead.py --scale tiny   # ~5 min, smoke
    .venv/bin/python benchmarks/orchestration_overhead.py --scale tiny --baseline-rev a0b936d \\
        --breakdown                                                         # ~12 min
    .venv/bin/python benchmarks/orchestration_overhead.py --scale demo   # ~40 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.tiny_project import dvc_bin, env, make_tiny_project, run  # noqa: E402

BIN = Path(sys.executable).parent
DIRECT = """
import json, os, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from ssl_core.config import load_params
from ssl_core.stages import (checks, cluster, curate, dedup, distill, embed, evaluate,
                             import_demo, ingest, train_teacher)
p = load_params("params.yaml")
t0 = time.perf_counter()
order = [(import_demo, None), (ingest, "manifest"), (embed, None), (dedup, "dedup"),
         (cluster, None), (curate, "curated"), (train_teacher, "teacher"),
         (distill, "students"), (evaluate, "report")]
for mod, suite in order:
    mod.run(p, progress=False)
    if suite:
        assert checks.run(p, suite).success, suite
print(json.dumps({"wall_s": time.perf_counter() - t0}))
"""
LINEAGE_DIRS = ("demo/pool", "demo/eval", "manifest", "embeddings", "dedup", "clusters",
                "curated", "teacher", "students/*", "reports")  # fmt: skip


def stage_seconds(project: Path) -> float:
    """Sum of the stages' own durations (their lineage records)."""
    total = 0.0
    for pattern in LINEAGE_DIRS:
        for d in (project / "data").glob(pattern):
            lin = d / "lineage.json"
            if lin.is_file():
                total += json.loads(lin.read_text()).get("duration_s") or 0.0
    return total


def dagster_steps(project: Path) -> int:
    """Dagster steps of a full pass: one per asset (each student once) and per GX check."""
    from orchestration.graph import GRAPH
    from orchestration.pipeline import student_names

    students = len(student_names(project / "params.yaml"))
    return sum(students if s.partitioned else 1 for s in GRAPH) + sum(bool(s.check) for s in GRAPH)


def orchestrated(project: Path, code: Path = ROOT) -> float:
    """The full pass through Dagster with ``orchestration/`` from ``code`` (ssl_core: this
    checkout, as the ``sslops`` the stages run)."""
    env = {**os.environ, "DAGSTER_HOME": str(project / ".dagster_home"),
           "SSLOPS_PROJECT_DIR": str(project), "PATH": f"{BIN}:{os.environ['PATH']}",
           "SSLOPS_DVC": dvc_bin() or "dvc",
           "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(code), str(ROOT)]))}  # fmt: skip
    (project / ".dagster_home").mkdir()
    (project / ".dagster_home/dagster.yaml").touch()
    t = time.perf_counter()
    r = subprocess.run(
        [str(BIN / "python"), "-m", "orchestration.pipeline"], cwd=code, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"orchestrated run failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return wall


def direct(project: Path) -> float:
    t = time.perf_counter()
    run([sys.executable, "-c", DIRECT], project)
    return time.perf_counter() - t


def baseline_code(rev: str, dest: Path) -> Path:
    """``orchestration/`` (and ``pyproject.toml``, where ``dg`` finds the project) as of git
    ``rev`` in ``dest`` (read with ``git archive``)."""
    dest.mkdir(parents=True)
    tar = subprocess.run(
        ["git", "archive", rev, "orchestration", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest


PIECES = {  # name: (command run in the built project, what it is)
    "python": (["{py}", "-c", "pass"], "interpreter start"),
    "sslops_imports": (["{py}", "-c", "import ssl_core.cli"], "`sslops` start: its imports"),
    "gx_import": (["{py}", "-c", "import great_expectations"], "Great Expectations import"),
    "dvc_start": (["{dvc}", "--version"], "DVC start-up"),
    "dvc_repro_noop": (
        ["{dvc}", "repro", "--single-item", "curated"],
        "`dvc repro -s` of an up-to-date stage (start, dvc.yaml + dvc.lock parse, dep hashes)",
    ),
    "dvc_status": (["{dvc}", "status"], "`dvc status`, whole graph"),
    "dvc_commit": (["{dvc}", "commit", "--force", "check_curated"], "`dvc commit -f` of a check"),
    "sslops_check": (["{bin}/sslops", "--quiet", "check", "curated"], "`sslops check curated`"),
    "check_step_before": (
        ["{dvc}", "repro", "--single-item", "--force", "check_curated"],
        "check step before: `dvc repro -s -f check_curated` (DVC + sslops + GX import + suite)",
    ),
}


def _time(cmd: list[str], project: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=project, env=env(), capture_output=True, check=True)
    return time.perf_counter() - t


def _median(xs: list[float]) -> float:
    return round(sorted(xs)[len(xs) // 2], 2)


def breakdown(project: Path, repeats: int = 3) -> dict:
    """Median seconds of each piece of a step's fixed cost, on a built (up-to-date) project;
    the subprocess pieces alternate, so machine load spreads over all of them."""
    from orchestration.runner import run_check

    fill = {"py": str(BIN / "python"), "dvc": dvc_bin() or "dvc", "bin": str(BIN)}
    cmds = {k: [w.format(**fill) for w in c] for k, (c, _) in PIECES.items()}
    times: dict[str, list[float]] = {k: [] for k in [*cmds, "check_in_process", "dagster_pass"]}
    t = time.perf_counter()
    run_check(project, "params.yaml", "curated")  # the first one imports GX
    first = time.perf_counter() - t
    for _ in range(repeats):
        for k, cmd in cmds.items():
            times[k].append(_time(cmd, project))
        t = time.perf_counter()
        run_check(project, "params.yaml", "curated")
        times["check_in_process"].append(time.perf_counter() - t)
        times["dagster_pass"].append(_dagster_pass(project))
    out = {k: _median(v) for k, v in times.items()}
    out["check_in_process_first"] = round(first, 2)
    out["check_step_after"] = round(out["check_in_process"] + out["dvc_commit"], 2)
    launch = ROOT / "benchmarks/results/launch_overhead.json"
    if launch.is_file():
        out["torchx_job"] = json.loads(launch.read_text()).get("overhead_per_job_s")
    out["repeats"] = repeats
    return out


def _dagster_pass(project: Path) -> float:
    """Dagster alone: the three jobs of a full pass (sqlite instance, like ``make demo``) with
    a runner that runs nothing (the outputs are there)."""
    import dagster as dg

    from orchestration.defs.assets import make_assets
    from orchestration.defs.checks import CHECKS
    from orchestration.defs.jobs import JOBS
    from orchestration.defs.resources import StageRunner
    from orchestration.pipeline import run_steps, student_names
    from ssl_core.quality.gx_adapter import SuiteResult

    class Noop(StageRunner):
        def run(self, context, dvc_stage, cli) -> bool:  # noqa: ANN001
            context.log.info(f"noop {dvc_stage}")
            return True

        def check(self, context, suite, check_stage, stage_ran=True):  # noqa: ANN001, ANN201
            return SuiteResult(suite, True).to_dict(), None

    students = student_names(project / "params.yaml")
    runner = Noop(mode="dvc", project=str(project))
    defs = dg.Definitions(
        assets=make_assets(students), asset_checks=CHECKS, jobs=JOBS, resources={"runner": runner}
    )
    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.local_temp(home) as instance:
        t = time.perf_counter()
        results = run_steps(defs, instance, students, log=lambda _: None)
        wall = time.perf_counter() - t
    if not all(r.success for r in results):
        raise SystemExit("the no-op Dagster pass failed")
    return wall


def breakdown_md(b: dict) -> str:
    """The breakdown as a markdown table."""
    rows = [(PIECES[k][1], b[k]) for k in PIECES]
    rows += [
        ("`sslops check` in-process, first of a process (imports GX)", b["check_in_process_first"]),
        ("`sslops check` in-process, GX already imported", b["check_in_process"]),
        ("check step after: in-process check + `dvc commit -f`", b["check_step_after"]),
        ("Dagster alone, full pass of 3 runs (sqlite instance, no-op runner)", b["dagster_pass"]),
    ]
    if b.get("torchx_job") is not None:
        rows.append(
            ("TorchX local_cwd job over in-process (launch_overhead.json)", b["torchx_job"])
        )
    table = "\n".join(f"| {what} | {s} |" for what, s in rows)
    gx = b["sslops_check"] - b["sslops_imports"] - b["check_in_process"]
    return (
        f"## One step's fixed cost, piece by piece (median of {b['repeats']})\n\n"
        f"| piece | s |\n|---|---|\n{table}\n\n"
        "Where a step's time goes. **Asset step**: `dvc repro -s <stage>` (DVC start-up, "
        f"parsing dvc.yaml and dvc.lock, hashing deps: {b['dvc_repro_noop']} s when nothing "
        "runs; more when it hashes and caches new outputs), then a fresh `sslops` process "
        f"({b['sslops_imports']} s of imports: polars, numpy, pydantic, torchx; stage commands "
        "never import GX, checks never import torch), then for embeddings, teacher and students "
        f"a TorchX local_cwd job ({b.get('torchx_job')} s each over in-process). **Check step, "
        f"before**: {b['check_step_before']} s, of which ~{gx:.1f} s was importing Great "
        f"Expectations (and pandas, scipy) in a fresh process: the suite itself takes "
        f"{b['check_in_process']} s. **Check step, after**: the suite runs in the Dagster "
        f"process ({b['check_in_process']} s; the first of a process {b['check_in_process_first']}"
        f" s, importing GX once) and `dvc commit -f check_<suite>` records it "
        f"({b['dvc_commit']} s, mostly DVC parsing and rewriting dvc.lock with pure-Python YAML): "
        f"{b['check_step_after']} s. **Dagster** itself: {b['dagster_pass']} s per full pass "
        "(3 runs, 15 steps, sqlite event log).\n"
    )


def _runs(a: argparse.Namespace, tmp: Path) -> dict:
    """Build the project from scratch once per run kind; returns each run's split."""
    kinds: list[tuple[str, object]] = []
    if a.baseline_rev:
        code = baseline_code(a.baseline_rev, tmp / "baseline_code")
        kinds.append(("baseline", lambda p: orchestrated(p, code)))
    kinds += [("orchestrated", orchestrated), ("direct", direct)]
    res: dict = {}
    for name, fn in kinds:
        proj = make_tiny_project(tmp / name)
        if a.scale == "demo":  # the repository's own params (the demo sizes), not the tiny ones
            (proj / "params.yaml").write_text((ROOT / "params.yaml").read_text())
        wall = fn(proj)
        work = stage_seconds(proj)
        steps = dagster_steps(proj)
        res[name] = {"wall_s": round(wall, 1), "stage_work_s": round(work, 1),
                     "other_s": round(wall - work, 1)}  # fmt: skip
        if name != "direct":
            res[name] |= {"steps": steps, "per_step_s": round((wall - work) / steps, 2)}
        print(name, res[name], flush=True)
    if a.breakdown:
        res["breakdown"] = breakdown(tmp / "orchestrated", repeats=a.repeats)
    return res


def projection(res: dict) -> dict:
    """Demo-scale overhead share projected from the per-step fixed cost measured here and the
    stages' own work recorded by this checkout's last demo run (its ``data/*/lineage.json``).
    A projection, not a measurement: see the caveats written next to it."""
    work = {}
    for pattern in LINEAGE_DIRS:
        for d in sorted((ROOT / "data").glob(pattern)):
            if (d / "lineage.json").is_file():
                lin = json.loads((d / "lineage.json").read_text())
                work[str(d.relative_to(ROOT))] = round(lin.get("duration_s") or 0.0, 1)
    steps = dagster_steps(ROOT)
    total = sum(work.values())
    out = {"demo_stage_work_s": work, "demo_stage_work_total_s": round(total, 1),
           "demo_steps": steps}  # fmt: skip
    for run_name in ("baseline", "orchestrated"):
        if run_name in res and total:
            over = res[run_name]["per_step_s"] * steps
            out[run_name] = {"overhead_s": round(over, 1), "share": round(over / (total + over), 4),
                             "share_if_work_25pct_less": round(over / (0.75 * total + over), 4)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=("tiny", "demo"), default="tiny")
    ap.add_argument("--baseline-rev", help="also run orchestration/ as of this git revision")
    ap.add_argument("--breakdown", action="store_true", help="time one step's pieces after")
    ap.add_argument("--repeats", type=int, default=3, help="breakdown repetitions (median)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument(
        "--render",
        action="store_true",
        help="recompute the projection and rewrite the .md from the .json (no runs)",
    )
    a = ap.parse_args()
    out = ROOT / "benchmarks/results" / f"orchestration_overhead_{a.scale}"
    if a.render:  # e.g. after a new demo run: the projection's inputs changed
        res = json.loads(out.with_suffix(".json").read_text())
        _derive(res)
        if a.scale == "tiny":
            res["demo_projection"] = projection(res)
        out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
        out.with_suffix(".md").write_text(_markdown(res))
        return
    res = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
           "scale": a.scale, "baseline_rev": a.baseline_rev}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        res |= _runs(a, Path(tmp))
    _derive(res)
    if a.scale == "tiny":
        res["demo_projection"] = projection(res)
    print(json.dumps(res, indent=2))
    if not a.no_write:
        out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
        out.with_suffix(".md").write_text(_markdown(res))


def _markdown(res: dict) -> str:
    o, d = res["orchestrated"], res["direct"]
    rows = [("Dagster + DVC + jobs", o)]
    if "baseline" in res:
        rows.insert(0, (f"same, orchestration/ at {res['baseline_rev']} (before)", res["baseline"]))
    table = "\n".join(
        f"| {label} | {r['wall_s']} | {r['stage_work_s']} | {r['other_s']} | "
        f"{r.get('per_step_s', '')} |"
        for label, r in [*rows, ("direct calls, one process", d)]
    )
    text = (
        f"# Orchestration overhead ({res['scale']} scale)\n\n"
        f"`benchmarks/orchestration_overhead.py --scale {res['scale']}"
        f"{' --baseline-rev ' + res['baseline_rev'] if res.get('baseline_rev') else ''}"
        f"{' --breakdown' if 'breakdown' in res else ''}` on {res['machine']}, {res['date']}.\n\n"
        "| run | wall s | stages' own work s | rest s | rest per Dagster step s |\n"
        f"|---|---|---|---|---|\n{table}\n\n"
        f"Within the orchestrated run, {100 * res['overhead_within_run_fraction']:.1f} % of the "
        f"wall time is outside the stages' work (Dagster start-up and event handling, `dvc repro` "
        f"per stage, `dvc commit` per check, a process per stage and per TorchX job). "
        f"Orchestrated / direct wall time: {res['wall_ratio_orchestrated_over_direct']} (the runs "
        "ran one after the other on shared cores).\n"
    )
    text += _over_direct_md(res)
    if "breakdown" in res:
        text += "\n" + breakdown_md(res["breakdown"])
    if "demo_projection" in res:
        text += "\n" + projection_md(res["demo_projection"])
    if res.get("other_invocations"):
        text += "\n" + _others_md(res)
    return text


def _derive(res: dict) -> None:
    """The ratios computed from the runs' splits (written to the .json as well)."""
    o, d = res["orchestrated"], res["direct"]
    res["overhead_within_run_fraction"] = round(o["other_s"] / o["wall_s"], 4)
    res["wall_ratio_orchestrated_over_direct"] = round(o["wall_s"] / d["wall_s"], 3)
    for name in ("baseline", "orchestrated"):
        if name in res:
            extra, share = over_direct(res[name], d)
            res[name] |= {"added_over_direct_s": extra, "added_over_direct_share": share}


def over_direct(run: dict, direct_run: dict) -> tuple[float, float]:
    """(seconds, share of the run's wall time) the orchestration adds over direct calls: the
    run's time outside the stages' work less the direct run's (its imports of torch, GX, polars
    and the stage modules, which any way of running the graph pays). Both terms are measured
    within their own run, so load that slows the stages' work alike does not enter."""
    extra = run["other_s"] - direct_run["other_s"]
    return round(extra, 1), round(extra / run["wall_s"], 4)


def _over_direct_md(res: dict) -> str:
    d = res["direct"]
    rows = [(k, res[k]) for k in ("baseline", "orchestrated") if k in res]
    lines = []
    for name, r in rows:
        extra, share = over_direct(r, d)
        label = (
            f"orchestration/ at {res['baseline_rev']}" if name == "baseline" else "this checkout"
        )
        lines.append(
            f"| {label} | {r['other_s']} | {d['other_s']} | {extra} | {100 * share:.1f} % |"
        )
    return (
        "\nWhat the orchestration adds over calling the stage functions directly (each run's time "
        "outside its stages' work, less the direct run's: imports every way of running pays):\n\n"
        "| orchestration | rest s | direct rest s | added s | share of wall time |\n"
        "|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )


def _others_md(res: dict) -> str:
    """Earlier invocations kept in the .json (``other_invocations``): load differs, compare the
    before/after within each row."""
    p = res.get("demo_projection", {})
    work, steps = p.get("demo_stage_work_total_s"), p.get("demo_steps")
    rows = []
    for o in res["other_invocations"]:
        b, a = o["baseline"], o["orchestrated"]
        share = (
            f"{100 * a['per_step_s'] * steps / (work + a['per_step_s'] * steps):.1f} %"
            if work
            else ""
        )
        rows.append(
            f"| {o['date']} | {b['other_s']} ({b['per_step_s']}) | {a['other_s']} "
            f"({a['per_step_s']}) | {a['stage_work_s']} | {o['direct']['wall_s']} | {share} |"
        )
    return (
        "## Other invocations (same command, other machine load)\n\n"
        "The same tiny stages' own work in each run shows the load: "
        f"{res['orchestrated']['stage_work_s']} s in the run above.\n\n"
        "| date | rest s before (per step) | rest s after (per step) | stages' own work s after "
        "| direct wall s | projected demo share after |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def projection_md(p: dict) -> str:
    """The projection with its inputs, labelled as such."""
    rows = "\n".join(
        f"| {label} | {p[k]['overhead_s']} | {100 * p[k]['share']:.1f} % | "
        f"{100 * p[k]['share_if_work_25pct_less']:.1f} % |"
        for k, label in (("baseline", "before"), ("orchestrated", "after"))
        if k in p
    )
    inputs = ", ".join(f"{k.removeprefix('data/')} {v}" for k, v in p["demo_stage_work_s"].items())
    return (
        "## Demo scale: a projection, not a measurement\n\n"
        f"Inputs: the rest per Dagster step measured above x {p['demo_steps']} steps, against "
        f"the stages' own work of this checkout's last demo run ({p['demo_stage_work_total_s']} "
        f"s: {inputs}; from `data/*/lineage.json`, a run on loaded cores).\n\n"
        "| orchestration | projected rest s | share of wall time | same, stage work 25 % less |\n"
        f"|---|---|---|---|\n{rows}\n\n"
        "Caveats: at demo scale DVC also hashes and caches bigger outputs (the pool's ~7.8k "
        "files, ~45 MB of embeddings, ~62 MB of teacher), which the tiny steps do not have, and "
        "the suites read more rows; the tiny fixed cost and the demo stage times both come from "
        "loaded cores, and on a quieter machine the stage work (mostly the teacher) shrinks "
        "more than the fixed cost does (last column). The measured demo number comes from "
        "`make demo` on a fresh clone.\n"
    )


if __name__ == "__main__":
    main()
