"""Resources: how a stage is executed (through DVC or the CLI) and where the project lives."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.dvc_calls import run_dvc
from orchestration.runner import (
    dvc_lock_hashes,
    project_dir,
    repro_argv,
    run_check,
    run_streaming,
    stage_command,
)
from ssl_core.launch.settings import RUN_ID_ENV


class StageRunner(dg.ConfigurableResource):
    """Runs one pipeline stage as a subprocess and reads back its lineage record.

    ``mode='dvc'`` (default) keeps DVC and Dagster in lock-step; ``mode='cli'`` runs the
    stage command directly.
    """

    mode: str = os.environ.get("SSLOPS_RUNNER_MODE", "dvc")  # k8s/: cli (image is read-only)
    project: str = ""
    params_file: str = "params.yaml"

    @property
    def root(self) -> Path:
        return Path(self.project).resolve() if self.project else project_dir()

    def run(self, context: Any, dvc_stage: str, cli: tuple[str, ...]) -> bool:
        """Run the stage; True if its command ran (False: DVC found it up to date)."""
        cmd = stage_command(self.mode, self.root, dvc_stage, cli, self.params_file)
        context.log.info(f"running: {' '.join(cmd)} (cwd {self.root})")
        env = {RUN_ID_ENV: context.run.run_id}  # job labels and records name the run
        ran = self.mode != "dvc"

        def log(line: str) -> None:
            nonlocal ran
            ran = ran or line.startswith("Running stage ")  # dvc repro -s: only this stage
            context.log.info(line)

        if self.mode == "dvc":  # through this process's warm DVC (orchestration/dvc_calls.py)
            code, tail = run_dvc(self.root, repro_argv(dvc_stage), log, env)
        else:
            code, tail = run_streaming(cmd, self.root, log, env)
        if code != 0:
            raise dg.Failure(
                description=f"stage {dvc_stage} failed with exit code {code}",
                metadata={
                    "command": " ".join(cmd),
                    "output_tail": dg.MetadataValue.md(f"```\n{tail}\n```"),
                },
            )
        return ran

    def check(
        self, context: Any, suite: str, check_stage: str, stage_ran: bool = True
    ) -> tuple[dict | None, str | None]:
        """GX suite ``suite`` as its DVC stage ``check_stage`` would run it.

        In ``dvc`` mode, when the asset's stage did not run just before (``stage_ran``
        False), ``dvc status`` first: an up-to-date check is not rerun (its recorded result is
        read back), as ``dvc repro`` would skip it. Otherwise the suite runs in this process
        (:func:`orchestration.runner.run_check`) and a passing one is recorded with
        ``dvc commit --force <check_stage>``. Returns (the result as in
        ``<checks_dir>/<suite>.json``, or None if it could not run; an error or None).
        """
        if self.mode not in ("dvc", "cli"):
            raise ValueError(f"unknown runner mode {self.mode!r}: use 'dvc' or 'cli'")
        dvc = self.mode == "dvc"
        path = self.root / self.params().paths.checks_dir / f"{suite}.json"
        if dvc and not stage_ran and path.is_file() and self._up_to_date(context, check_stage):
            context.log.info(f"{check_stage} is up to date in dvc.lock: result from {path}")
            return json.loads(path.read_text()), None
        record = None
        if dvc:
            argv = ["commit", "--force", check_stage]

            def record() -> None:
                code, tail = run_dvc(self.root, argv, context.log.info)
                if code != 0:
                    raise RuntimeError(
                        f"dvc {' '.join(argv)} failed with exit code {code}:\n{tail}"
                    )

        context.log.info(f"running: sslops check {suite} in-process (cwd {self.root})")
        try:
            result = run_check(self.root, self.params_file, suite, record)
        except Exception as e:  # what `sslops check` exits non-zero with; the check fails
            return None, f"sslops check {suite}: {type(e).__name__}: {e}"
        for line in result.summary().splitlines():
            context.log.info(line)
        if not result.success:
            return result.to_dict(), f"GX suite '{suite}' failed (not recorded in dvc.lock)"
        return result.to_dict(), None

    def _up_to_date(self, context: Any, stage: str) -> bool:
        """``dvc status <stage>`` reports nothing to do."""
        code, tail = run_dvc(self.root, ["status", "--json", stage], lambda _: None)
        clean = code == 0 and tail.strip() == "{}"
        context.log.info(f"dvc status {stage}: {'up to date' if clean else 'to run'}")
        return clean

    def params(self):
        from ssl_core.config import load_params

        return load_params(self.root / self.params_file)

    def lineage(self, out_dir: str) -> dict:
        path = self.root / out_dir / "lineage.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def lock_hashes(self, dvc_stage: str) -> dict[str, str]:
        return dvc_lock_hashes(self.root, dvc_stage)


defs = dg.Definitions(resources={"runner": StageRunner()})
