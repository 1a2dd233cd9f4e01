"""Shared plumbing for stage functions: timing, lineage, logging."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from ssl_core.config import Params, section_dict
from ssl_core.lineage import build_lineage, write_lineage

log = logging.getLogger("sslops")


class StageRun:
    """Collects what a stage needs to write its lineage record when it finishes."""

    def __init__(
        self, name: str, params: Params, sections: tuple[str, ...], seed: int | None = None
    ):
        self.name, self.params, self.sections, self.seed = name, params, sections, seed
        self.started = dt.datetime.now(dt.UTC)
        log.info("stage %s: started", name)

    def lineage(self, out_dir: Path, inputs: dict[str, str | Path], stats: dict[str, Any]) -> dict:
        """Write ``lineage.json`` into ``out_dir`` (rank 0 only under torchrun)."""
        if int(os.environ.get("RANK", "0")) != 0:
            return {}
        record = build_lineage(
            self.name,
            section_dict(self.params, *self.sections),
            inputs,
            seed=self.seed,
            stats=stats,
            started=self.started,
        )
        write_lineage(out_dir, record)
        log.info("stage %s: done in %.1fs %s", self.name, record["duration_s"], stats)
        return record
