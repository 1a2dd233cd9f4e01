"""Blocking GX asset checks: the same ``check_<suite>`` DVC stages / ``sslops check`` command.

The suite runs in the Dagster process (``StageRunner.check``: the function ``sslops check``
runs, under the same lock; GX is imported once per process instead of once per check), and in
``dvc`` mode ``dvc commit --force check_<suite>`` records it in ``dvc.lock`` as ``dvc repro``
would, so ``dvc status`` stays clean.

A failing check stops downstream assets in the same run (``blocking=True``), which is why each
check runs in the job of the asset it gates: ``gx_students`` runs in ``ssl_report``, before
``report`` (see ``orchestration/pipeline.py``).
"""

import json

import dagster as dg

from orchestration.defs.resources import StageRunner
from orchestration.graph import GRAPH, StageSpec


def _make_check(spec: StageSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=spec.name,
        name=f"gx_{spec.check}",
        blocking=True,
        description=f"Great Expectations suite '{spec.check}' (DVC stage {spec.check_stage})",
    )
    def _check(context: dg.AssetCheckExecutionContext, runner: StageRunner) -> dg.AssetCheckResult:
        ran = _stage_ran_in_this_run(context, spec.name)
        result, failure = runner.check(context, spec.check, spec.check_stage, ran)
        if result is None:
            return dg.AssetCheckResult(passed=False, metadata={"error": failure or "no result"})
        rows = [
            {
                "batch": o["batch"],
                "expectation": o["expectation"],
                "success": o["success"],
                "threshold": json.dumps({k: v for k, v in o["kwargs"].items() if k != "column"}),
                "observed": json.dumps(o["observed"]),
            }
            for o in result["outcomes"]
        ]
        md = {
            "failed_expectations": sum(not r["success"] for r in rows),
            "expectations": len(rows),
            "results": dg.MetadataValue.md(_table(rows)),
        }
        if failure:
            md["error"] = failure
        return dg.AssetCheckResult(passed=bool(result["success"]) and failure is None, metadata=md)

    return _check


def _stage_ran_in_this_run(context: dg.AssetCheckExecutionContext, asset: str) -> bool:
    """Whether this run's materialisation of ``asset`` ran its stage (so its check is stale
    and ``dvc status`` can be skipped); False when the asset was not built in this run."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.run_id != context.run.run_id or event.asset_materialization is None:
        return False
    ran = event.asset_materialization.metadata.get("stage_ran")
    return bool(getattr(ran, "value", ran))


def _table(rows: list[dict]) -> str:
    head = "| batch | expectation | ok | threshold | observed |\n|---|---|---|---|---|\n"
    return head + "\n".join(
        f"| {r['batch']} | {r['expectation']} | {'✅' if r['success'] else '❌'} | "
        f"`{r['threshold']}` | `{r['observed'][:120]}` |"
        for r in rows
    )


CHECKS = [_make_check(s) for s in GRAPH if s.check]
defs = dg.Definitions(asset_checks=CHECKS)
