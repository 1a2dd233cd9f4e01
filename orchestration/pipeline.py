"""The whole graph as three Dagster jobs run in order, and the driver that runs them.

``students`` is partitioned by student (one partition per name in ``distill.students``), and
a Dagster run is either partitioned or not, so the graph is three jobs:

1. ``ssl_upstream``: ``raw_pool`` … ``teacher`` with their blocking checks;
2. ``ssl_students``: one run per student partition (``students`` alone);
3. ``ssl_report``: the ``students`` check (``gx_students``, blocking) and ``report`` with its
   check, so the students check still gates the report inside one run.

A full run is those steps in order, each student once, stopping at the first failure:
:func:`steps` says which; ``make pipeline`` runs them with :func:`main`
(``python -m orchestration.pipeline``), and the ``pipeline_chain`` sensor
(``orchestration/defs/sensors.py``) requests each next step when the previous run succeeds,
so a run started by the schedule, the pool sensor or the UI continues to the report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

UPSTREAM_JOB, STUDENTS_JOB, REPORT_JOB = "ssl_upstream", "ssl_students", "ssl_report"
JOBS = (UPSTREAM_JOB, STUDENTS_JOB, REPORT_JOB)
CHAIN_TAG = "sslops/chain"  # the id of the full run a chained run belongs to

Step = tuple[str, str | None]  # (job name, partition key)


def student_names(params_file: str | Path) -> list[str]:
    """``distill.students`` of ``params_file`` as the partition keys (read raw, so a code
    location loads even when other keys are invalid; those fail the run instead)."""
    path = Path(params_file)
    raw = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    names = ((raw or {}).get("distill") or {}).get("students")
    if not names:
        from ssl_core.config import DistillConfig

        names = DistillConfig.model_fields["students"].default
    return [str(n) for n in dict.fromkeys(names)]


def steps(students: list[str]) -> list[Step]:
    """The runs of one full pass, in order."""
    return [(UPSTREAM_JOB, None), *((STUDENTS_JOB, s) for s in students), (REPORT_JOB, None)]


def next_step(students: list[str], job: str, partition: str | None) -> Step | None:
    """The run after a successful ``(job, partition)`` in :func:`steps` (None: last, or not
    a step, e.g. a partition no longer in ``distill.students``)."""
    order = steps(students)
    try:
        i = order.index((job, partition))
    except ValueError:
        return None
    return order[i + 1] if i + 1 < len(order) else None


def run_steps(
    defs: Any, instance: Any, students: list[str], log: Callable[[str], None] = print
) -> list[Any]:
    """Run :func:`steps` in order with ``defs`` (a ``dg.Definitions`` holding the three jobs)
    in ``instance``, stopping at the first failed run; returns each run's result."""
    from orchestration.runner import preload_checks

    preload_checks()  # the GX checks run in this process: import GX while the first stages run
    results: list[Any] = []
    chain: str | None = None
    for job, partition in steps(students):
        label = job + (f" [{partition}]" if partition else "")
        log(f"== {label}")
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance,
            partition_key=partition,
            tags={CHAIN_TAG: chain} if chain else {},
            raise_on_error=False,
        )
        results.append(result)
        chain = chain or result.run_id
        if not result.success:
            log(f"!! {label} failed (run {result.run_id}); stopping")
            break
    return results


def main() -> int:
    """``make pipeline``: every step in this project's Dagster instance (``$DAGSTER_HOME``);
    exit 1 at the first failed run."""
    import dagster as dg

    from orchestration.definitions import defs as load_defs
    from orchestration.runner import project_dir

    students = student_names(project_dir() / "params.yaml")
    results = run_steps(load_defs(), dg.DagsterInstance.get(), students, log=_say)
    return 0 if results and results[-1].success and len(results) == len(steps(students)) else 1


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
