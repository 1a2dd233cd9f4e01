"""The only module that touches Great Expectations: GX API churn stays in this file.

A *suite* here is a list of :class:`Batch` objects, each a named polars frame with the GX
expectations to run on it. :func:`validate` runs them on an ephemeral (in-memory, offline) GX
context and returns a plain, JSON-serialisable :class:`SuiteResult`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass
class Batch:
    name: str
    frame: pl.DataFrame
    expectations: list[Any]  # great_expectations.expectations.Expectation instances


@dataclass
class ExpectationOutcome:
    batch: str
    expectation: str
    kwargs: dict[str, Any]
    success: bool
    observed: Any


@dataclass
class SuiteResult:
    suite: str
    success: bool
    outcomes: list[ExpectationOutcome] = field(default_factory=list)

    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"GX suite '{self.suite}': {'PASSED' if self.success else 'FAILED'}"]
        for o in self.outcomes:
            mark = "ok  " if o.success else "FAIL"
            lines.append(f"  [{mark}] {o.batch}: {o.expectation} {o.kwargs} observed={o.observed}")
        return "\n".join(lines)


def expectations():
    """The GX expectations module (imported lazily: GX takes seconds to import)."""
    import great_expectations.expectations as gxe

    return gxe


def preload() -> None:
    """Import Great Expectations now (seconds) so that a later :func:`validate` does not."""
    import great_expectations  # noqa: F401
    import great_expectations.expectations  # noqa: F401


def _observed(result: dict[str, Any]) -> Any:
    if "observed_value" in result:
        return result["observed_value"]
    if "unexpected_count" in result:
        return {
            "unexpected_count": result["unexpected_count"],
            "examples": [str(v) for v in (result.get("partial_unexpected_list") or [])[:5]],
        }
    return None


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v if isinstance(v, str | int | float | bool | type(None)) else str(v)


def validate(suite: str, batches: list[Batch]) -> SuiteResult:
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False}
    source = ctx.data_sources.add_pandas(f"{suite}_source")
    outcomes: list[ExpectationOutcome] = []
    for batch in batches:
        asset = source.add_dataframe_asset(batch.name)
        definition = asset.add_batch_definition_whole_dataframe(f"{batch.name}_all")
        gx_suite = ctx.suites.add(gx.ExpectationSuite(name=f"{suite}.{batch.name}"))
        for exp in batch.expectations:
            gx_suite.add_expectation(exp)
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite}.{batch.name}", data=definition, suite=gx_suite)
        )
        run = vd.run(batch_parameters={"dataframe": batch.frame.to_pandas()})
        for res in run.results:
            cfg = res.expectation_config
            kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
            outcomes.append(
                ExpectationOutcome(
                    batch=batch.name,
                    expectation=cfg.type,
                    kwargs=_jsonable(kwargs),
                    success=bool(res.success),
                    observed=_jsonable(_observed(res.result or {})),
                )
            )
    return SuiteResult(suite=suite, success=all(o.success for o in outcomes), outcomes=outcomes)
