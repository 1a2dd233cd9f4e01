"""Blocking GX asset checks: the same ``check_<suite>`` DVC stages / ``sslops check`` command.

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
        failure = None
        try:
            runner.run(context, spec.check_stage, ("check", spec.check))
        except dg.Failure as e:
            failure = e.description
        path = runner.root / runner.params().paths.checks_dir / f"{spec.check}.json"
        if not path.is_file():
            return dg.AssetCheckResult(
                passed=False, metadata={"error": failure or "no result file"}
            )
        result = json.loads(path.read_text())
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


def _table(rows: list[dict]) -> str:
    head = "| batch | expectation | ok | threshold | observed |\n|---|---|---|---|---|\n"
    return head + "\n".join(
        f"| {r['batch']} | {r['expectation']} | {'✅' if r['success'] else '❌'} | "
        f"`{r['threshold']}` | `{r['observed'][:120]}` |"
        for r in rows
    )


CHECKS = [_make_check(s) for s in GRAPH if s.check]
defs = dg.Definitions(asset_checks=CHECKS)
