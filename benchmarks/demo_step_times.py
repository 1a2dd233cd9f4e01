"""Where a full pass's time goes, step by step, read back from a Dagster instance.

For each step of a full pass (``ssl_upstream``, each ``ssl_students`` partition, ``ssl_report``,
chained by their ``sslops/chain`` tag) this takes the step's wall time from the event log
(``STEP_START`` to ``STEP_SUCCESS``) and the stage's own work from the materialisation's
``stage_duration_s`` metadata (the stage's ``lineage.json``: measured inside the stage; 0 when
DVC reused the outputs, ``stage_ran`` false). The
difference is what the orchestration around the stage cost: DVC (hashing, caching, dvc.lock),
the ``sslops`` process, the TorchX job and its interpreter, Dagster's own events. Check steps
have no stage work: all of a check step is suite + recording.

Usage, after ``make demo`` (or any full pass) on this project::

    .venv/bin/python benchmarks/demo_step_times.py                  # the latest pass
    .venv/bin/python benchmarks/demo_step_times.py --passes 2 --labels before after \\
        --out benchmarks/results/demo_step_times                     # two passes side by side
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestration.pipeline import CHAIN_TAG, JOBS  # noqa: E402
from ssl_core.utils.atomic import write_text  # noqa: E402


def full_passes(instance, n: int) -> list[list]:
    """The last ``n`` complete passes (oldest first), each a list of runs in order."""
    runs = [r for r in instance.get_runs(limit=500) if r.job_name in JOBS]
    chains: dict[str, list] = {}
    for r in reversed(runs):  # oldest first
        chains.setdefault(r.tags.get(CHAIN_TAG, r.run_id), []).append(r)
    done = [c for c in chains.values() if c[-1].job_name == JOBS[-1] and c[0].job_name == JOBS[0]]
    return done[-n:]


def step_times(instance, run) -> list[dict]:
    """One row per step of ``run``: wall s, stage work s, rest s."""
    starts: dict[str, float] = {}
    work: dict[str, float] = {}
    rows = []
    for e in instance.all_logs(run.run_id):
        ev = e.dagster_event
        if ev is None:
            continue
        kind = ev.event_type_value
        if kind == "STEP_START":
            starts[e.step_key] = e.timestamp
        elif kind == "ASSET_MATERIALIZATION":
            md = ev.event_specific_data.materialization.metadata
            ran = md.get("stage_ran")
            value = md.get("stage_duration_s") if getattr(ran, "value", ran) else 0.0
            work[e.step_key] = float(getattr(value, "value", value) or 0.0)  # 0: DVC reused it
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and e.step_key in starts:
            wall = e.timestamp - starts[e.step_key]
            stage = work.get(e.step_key, 0.0)
            rows.append({"step": e.step_key, "wall_s": round(wall, 2),
                         "stage_s": round(stage, 2), "rest_s": round(wall - stage, 2)})  # fmt: skip
    return rows


def run_wall(instance, run) -> float:
    logs = instance.all_logs(run.run_id)
    return logs[-1].timestamp - logs[0].timestamp


def describe(instance, chain: list) -> dict:
    steps, walls = [], {}
    for run in chain:
        label = run.job_name + (
            f"[{run.tags['dagster/partition']}]" if "dagster/partition" in run.tags else ""
        )
        walls[label] = round(run_wall(instance, run), 1)
        steps += [{**s, "run": label} for s in step_times(instance, run)]
    wall = sum(walls.values())
    work = sum(s["stage_s"] for s in steps)
    return {"chain": chain[0].run_id, "runs_wall_s": walls, "wall_s": round(wall, 1),
            "stage_work_s": round(work, 1), "rest_s": round(wall - work, 1),
            "rest_share": round((wall - work) / wall, 4), "steps": steps}  # fmt: skip


def markdown(passes: dict[str, dict], command: str, note: str = "") -> str:
    labels = list(passes)
    keys = list(dict.fromkeys(s["step"] for p in passes.values() for s in p["steps"]))
    head = "| step | " + " | ".join(f"{lb}: wall s | {lb}: stage s | {lb}: rest s" for lb in labels)
    sep = "|---|" + "---|---|---|" * len(labels)
    lines = [head + " |", sep]
    for k in keys:
        cells = []
        for lb in labels:
            row = next((s for s in passes[lb]["steps"] if s["step"] == k), None)
            cells.append(
                " | ".join(str(row[c]) for c in ("wall_s", "stage_s", "rest_s"))
                if row
                else " |  | "
            )
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    totals = []
    for lb in labels:
        p = passes[lb]
        totals.append(
            f"{p['wall_s']} | {p['stage_work_s']} | **{p['rest_s']}** ({100 * p['rest_share']:.1f} %)"
        )
    lines.append("| **total (run walls)** | " + " | ".join(totals) + " |")
    return (
        "# Demo pass, step by step\n\n"
        f"`{command}`. Wall: the step in Dagster's event log; stage: the stage's own work "
        "(`stage_duration_s`, measured inside the stage); rest: the difference (DVC, the "
        "`sslops` process, the TorchX job and its interpreter, Dagster's events; a check step is "
        "all rest: its suite and `dvc commit`). The total row uses each run's wall time, so it "
        "also counts Dagster's time between steps.\n\n"
        + (f"{note}\n\n" if note else "")
        + "\n".join(lines)
        + "\n"
    )


def main() -> None:
    import dagster as dg

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dagster-home", default=str(ROOT / ".dagster_home"))
    ap.add_argument("--passes", type=int, default=1, help="how many of the latest full passes")
    ap.add_argument("--labels", nargs="*", help="a label per pass, oldest first")
    ap.add_argument("--out", help="write OUT.json and OUT.md")
    ap.add_argument("--note", default="", help="a paragraph for the .md: what each pass ran")
    a = ap.parse_args()
    instance = dg.DagsterInstance.from_config(a.dagster_home)
    chains = full_passes(instance, a.passes)
    if not chains:
        raise SystemExit(f"no complete pass in {a.dagster_home}: run `make demo` first")
    labels = a.labels or [f"pass {i + 1}" for i in range(len(chains))]
    if len(labels) != len(chains):
        raise SystemExit(f"{len(chains)} passes found, {len(labels)} labels given")
    passes = {lb: describe(instance, c) for lb, c in zip(labels, chains, strict=True)}
    command = shlex.join(["python", "benchmarks/demo_step_times.py", *sys.argv[1:]])
    print(markdown(passes, command, a.note))
    if a.out:
        out = Path(a.out)
        doc = {"command": command, "note": a.note, **passes}
        write_text(out.with_suffix(".json"), json.dumps(doc, indent=2) + "\n")
        write_text(out.with_suffix(".md"), markdown(passes, command, a.note))


if __name__ == "__main__":
    main()
