"""One Dagster asset per graph node, generated from :data:`orchestration.graph.GRAPH`.

``students`` is statically partitioned by ``distill.students`` (read when the code location
loads, like the schedule settings): each partition builds one student's folder.
"""

import json
from pathlib import Path

import dagster as dg

from orchestration.code_versions import code_versions
from orchestration.defs.resources import StageRunner
from orchestration.graph import GRAPH, StageSpec
from orchestration.pipeline import student_names
from orchestration.runner import project_dir
from ssl_core.utils.hashing import sha256_json

# code + params of each stage, as DVC tracks them (orchestration/code_versions.py): an asset
# whose version differs from its last materialisation's shows as stale in the UI
CODE_VERSIONS = code_versions(project_dir())


def _metadata(spec: StageSpec, runner: StageRunner, partition: str | None) -> tuple[dict, str]:
    out_dir = getattr(runner.params().paths, spec.out_dir_key)
    if partition:  # one student's folder
        out_dir = f"{out_dir}/{partition}"
    lin = runner.lineage(out_dir)
    hashes = runner.lock_hashes(spec.dvc_item(partition))
    md: dict = {
        "dvc_stage": spec.dvc_item(partition),
        "git_sha": lin.get("git_sha", "unknown"),
        "params_hash": lin.get("params_hash", ""),
        "params": dg.MetadataValue.json(lin.get("params", {})),
        "input_hashes": dg.MetadataValue.json(lin.get("input_hashes", {})),
        "libraries": dg.MetadataValue.json(lin.get("libraries", {})),
        "output_path": dg.MetadataValue.path(out_dir),
        "dvc_out_md5": dg.MetadataValue.json(hashes),
        "stage_duration_s": lin.get("duration_s") or 0.0,
    }
    for k, v in (lin.get("stats") or {}).items():
        if isinstance(v, bool | int | float | str):
            md[k] = v
        elif isinstance(v, dict | list):
            md[k] = dg.MetadataValue.json(v)
    report = runner.root / out_dir / "report.md"
    if report.is_file():  # the evaluation's tables, readable in the asset's page
        md.update(report_metadata(report.parent))
    # DVC's output hashes identify the data; fall back to the lineage record in cli mode
    version = sha256_json(hashes) if hashes else sha256_json(lin)
    return md, version[:16]


def report_metadata(folder: Path) -> dict:
    """The report's page in Dagster: report.md (its pictures live next to it, so image lines
    are left out) and one table row per model from ``metrics/<model>.json``."""
    text = (folder / "report.md").read_text()
    md: dict = {
        "report": dg.MetadataValue.md(
            "\n".join(line for line in text.splitlines() if not line.startswith("!["))
        )
    }
    files = sorted((folder / "metrics").glob("*.json"))
    rows = [{"model": f.stem, **json.loads(f.read_text())} for f in files]
    if rows:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        schema = dg.TableSchema(
            columns=[dg.TableColumn(c, "string" if c == "model" else "float") for c in cols]
        )
        records = [dg.TableRecord({c: r.get(c) for c in cols}) for r in rows]
        md["report_table"] = dg.MetadataValue.table(records, schema=schema)
    return md


def _observe_pool(runner: StageRunner) -> dg.MaterializeResult:
    """``raw_pool`` for a user's pool (data.source folder/parquet): nothing is built or
    written; the pool is described (file count, bytes, listing fingerprint) and the
    fingerprint is the asset's data version."""
    from ssl_core.data.manifest import describe_pool

    params = runner.params()
    desc = describe_pool(runner.root / params.paths.pool, params.ingest)
    md = {
        "source": params.data.source,
        "pool": dg.MetadataValue.path(str(runner.root / params.paths.pool)),
        "files": desc["files"],
        "bytes": desc["bytes"],
        "listing_sha256": desc["listing_sha256"],
        "written": "never: the pool is read-only to every stage",
    }
    return dg.MaterializeResult(
        metadata=md, data_version=dg.DataVersion(desc["listing_sha256"][:16])
    )


def command(spec: StageSpec, partition: str | None = None) -> tuple[str, ...]:
    """The ``sslops`` arguments that build the node (one student: ``--student NAME``)."""
    return (spec.name, "--student", partition) if partition else (spec.name,)


def _make_asset(spec: StageSpec, partitions: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    dvc_stage = spec.dvc_item("<student>") if spec.partitioned else spec.dvc_stage
    cli = "sslops " + " ".join(command(spec, "<student>" if spec.partitioned else None))

    @dg.asset(
        name=spec.name,
        deps=list(spec.deps),
        description=spec.description,
        group_name="ssl_pipeline",
        kinds={"python", "dvc"},
        code_version=CODE_VERSIONS[spec.name],
        metadata={"dvc_stage": dvc_stage, "cli": cli},
        partitions_def=partitions if spec.partitioned else None,
    )
    def _asset(context: dg.AssetExecutionContext, runner: StageRunner) -> dg.MaterializeResult:
        if spec.name == "raw_pool" and runner.params().data.source != "demo":
            context.log.info("data.source is not demo: the demo builder does not run")
            return _observe_pool(runner)
        partition = context.partition_key if spec.partitioned else None
        ran = runner.run(context, spec.dvc_item(partition), command(spec, partition))
        md, version = _metadata(spec, runner, partition)
        md["stage_ran"] = ran  # False: DVC found it up to date (its check then asks DVC too)
        return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(version))

    return _asset


def make_assets(students: list[str]) -> list[dg.AssetsDefinition]:
    """The graph's assets, ``students`` partitioned by these student names."""
    partitions = dg.StaticPartitionsDefinition(list(students))
    return [_make_asset(s, partitions) for s in GRAPH]


ASSETS = make_assets(student_names(project_dir() / "params.yaml"))
defs = dg.Definitions(assets=ASSETS)
