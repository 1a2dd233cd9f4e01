"""Resources: how a stage is executed (through DVC or the CLI) and where the project lives."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.runner import dvc_lock_hashes, project_dir, run_streaming, stage_command
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

    def run(self, context: Any, dvc_stage: str, cli: tuple[str, ...]) -> None:
        cmd = stage_command(self.mode, self.root, dvc_stage, cli, self.params_file)
        context.log.info(f"running: {' '.join(cmd)} (cwd {self.root})")
        env = {RUN_ID_ENV: context.run.run_id}  # job labels and records name the run
        code, tail = run_streaming(cmd, self.root, context.log.info, env)
        if code != 0:
            raise dg.Failure(
                description=f"stage {dvc_stage} failed with exit code {code}",
                metadata={
                    "command": " ".join(cmd),
                    "output_tail": dg.MetadataValue.md(f"```\n{tail}\n```"),
                },
            )

    def params(self):
        from ssl_core.config import load_params

        return load_params(self.root / self.params_file)

    def lineage(self, out_dir: str) -> dict:
        path = self.root / out_dir / "lineage.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def lock_hashes(self, dvc_stage: str) -> dict[str, str]:
        return dvc_lock_hashes(self.root, dvc_stage)


defs = dg.Definitions(resources={"runner": StageRunner()})
