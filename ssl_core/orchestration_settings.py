"""When the pipeline runs by itself: the weekly schedule and the pool sensor (``orchestration:``
in ``params.yaml``).

Both are off by default. None of these keys changes a result, so no DVC stage tracks them; the
Dagster code location reads them when it loads (reload it after an edit). See
``docs/operations.md``.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class OrchestrationConfig(BaseModel):
    """The weekly retraining schedule and the pool sensor (``orchestration/defs``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule_cron: str = Field(
        "0 3 * * 1", description="cron of the retraining schedule (5 fields; Mondays 03:00)"
    )
    schedule_timezone: str = Field("UTC", description="IANA time zone the cron is read in")
    schedule_enabled: bool = Field(
        False, description="start the schedule when the code location loads (else: UI toggle)"
    )
    pool_sensor_enabled: bool = Field(
        False, description="start the pool sensor when the code location loads (else: UI toggle)"
    )
    pool_sensor_interval_s: int = Field(
        300, ge=30, description="seconds between pool scans (each lists and stats every file)"
    )

    @field_validator("schedule_cron")
    @classmethod
    def _five_fields(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(
                f"schedule_cron needs 5 fields (min hour day month weekday), got {v!r}"
            )
        return v

    @field_validator("schedule_timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name, e.g. Europe/Paris)"
            ) from e
        return v


def load_orchestration(params_file: str | Path) -> OrchestrationConfig:
    """The ``orchestration:`` section of ``params_file`` (defaults if the file or the section
    is missing)."""
    path = Path(params_file)
    raw = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    return OrchestrationConfig.model_validate(raw.get("orchestration") or {})
