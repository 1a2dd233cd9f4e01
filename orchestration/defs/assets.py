"""One Dagster asset per pipeline stage, generated from :data:`orchestration.graph.GRAPH`."""

import dagster as dg

from orchestration.code_versions import code_versions
from orchestration.defs.resources import StageRunner
from orchestration.graph import DEMO_STAGE, GRAPH, StageSpec
from orchestration.runner import project_dir
from ssl_core.utils.hashing import sha256_json

# code + params of each stage, as DVC tracks them (orchestration/code_versions.py): an asset
# whose version differs from its last materialisation's shows as stale in the UI
CODE_VERSIONS = code_versions(project_dir())


def _metadata(spec: StageSpec, runner: StageRunner) -> tuple[dict, str]:
    out_dir = getattr(runner.params().paths, spec.out_dir_key)
    lin = runner.lineage(out_dir)
    hashes = runner.lock_hashes(spec.dvc_stage)
    md: dict = {
        "dvc_stage": spec.dvc_stage,
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
        md["report"] = dg.MetadataValue.md(report.read_text())
    # DVC's output hashes identify the data; fall back to the lineage record in cli mode
    version = sha256_json(hashes) if hashes else sha256_json(lin)
    return md, version[:16]


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


def _make_asset(spec: StageSpec) -> dg.AssetsDefinition:
    @dg.asset(
        name=spec.asset,
        deps=list(spec.deps),
        description=spec.description,
        group_name="ssl_pipeline",
        kinds={"python", "dvc"},
        code_version=CODE_VERSIONS[spec.asset],
        metadata={"dvc_stage": spec.dvc_stage, "cli": "sslops " + " ".join(spec.cli)},
    )
    def _asset(context: dg.AssetExecutionContext, runner: StageRunner) -> dg.MaterializeResult:
        if spec.dvc_stage == DEMO_STAGE and runner.params().data.source != "demo":
            context.log.info("data.source is not demo: the demo builder does not run")
            return _observe_pool(runner)
        runner.run(context, spec.dvc_stage, spec.cli)
        md, version = _metadata(spec, runner)
        return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(version))

    return _asset


ASSETS = [_make_asset(s) for s in GRAPH]
defs = dg.Definitions(assets=ASSETS)
