"""The asset graph as data: one entry per pipeline stage (asset), its DVC stage, its CLI
command, its upstream assets and its GX check. ``tests/integration/test_graph_parity.py``
asserts this is exactly the graph in ``dvc.yaml``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    asset: str
    dvc_stage: str
    cli: tuple[str, ...]
    deps: tuple[str, ...]
    out_dir_key: str  # params.paths field holding the stage's output (and its lineage.json)
    check: str | None = None  # suite name; its DVC stage is ``check_<suite>``
    description: str = ""

    @property
    def check_stage(self) -> str | None:
        return f"check_{self.check}" if self.check else None


DEMO_STAGE = "demo/dvc.yaml:import_demo"  # the demo builder's own pipeline file (see dvc.yaml)
PIPELINE_FILES = ("dvc.yaml", "demo/dvc.yaml")

GRAPH: tuple[StageSpec, ...] = (
    StageSpec(
        "raw_pool",
        DEMO_STAGE,
        ("import-demo",),
        (),
        "labels",
        description="The raw image pool: with data.source demo, built from Fashion-MNIST "
        "(long-tailed, duplicated, broken files) + eval set; with your own folder, observed "
        "only (file count and listing fingerprint), never written",
    ),
    StageSpec(
        "raw_manifest",
        "ingest",
        ("ingest",),
        ("raw_pool",),
        "manifest_dir",
        "manifest",
        "Every pool file decoded and described; broken files quarantined",
    ),
    StageSpec(
        "embeddings",
        "embed",
        ("embed",),
        ("raw_manifest",),
        "embeddings_dir",
        description="Embeddings of unique ok pool images and of the eval set",
    ),
    StageSpec(
        "dedup",
        "dedup",
        ("dedup",),
        ("embeddings", "raw_manifest"),
        "dedup_dir",
        "dedup",
        "Exact, near-duplicate and eval-decontamination removal",
    ),
    StageSpec(
        "clusters",
        "cluster",
        ("cluster",),
        ("dedup", "embeddings"),
        "clusters_dir",
        description="Hierarchical k-means over deduplicated embeddings",
    ),
    StageSpec(
        "curated_dataset",
        "curate",
        ("curate",),
        ("clusters",),
        "curated_dir",
        "curated",
        "Balanced hierarchical sample at the target size",
    ),
    StageSpec(
        "teacher",
        "train_teacher",
        ("train-teacher",),
        ("curated_dataset", "raw_manifest"),
        "teacher_dir",
        "teacher",
        "DINOv2-style teacher pretrained on the curated set",
    ),
    StageSpec(
        "students",
        "distill",
        ("distill",),
        ("teacher", "curated_dataset", "raw_manifest"),
        "students_dir",
        "students",
        "Students distilled from the frozen teacher",
    ),
    StageSpec(
        "eval_reports",
        "evaluate",
        ("evaluate",),
        ("students", "teacher", "curated_dataset", "clusters", "dedup", "raw_manifest"),
        "reports_dir",
        "report",
        "kNN of every model, curation diagnostics, report.md",
    ),
)

BY_ASSET = {s.asset: s for s in GRAPH}
