"""The asset graph as data: one entry per graph node, its upstream nodes and whether a GX
check gates it. A node has one name: its Dagster asset, its DVC stage (``check_<name>`` for
its check) and its ``sslops`` command (``ssl_core/stages/names.py``).
``tests/integration/test_graph_parity.py`` asserts this is exactly the graph in ``dvc.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEMO_FILE = "demo/dvc.yaml"  # the demo builder's own pipeline file (see dvc.yaml)
PIPELINE_FILES = ("dvc.yaml", DEMO_FILE)


@dataclass(frozen=True)
class StageSpec:
    name: str  # asset = DVC stage = sslops command
    deps: tuple[str, ...]
    out_dir_key: str  # params.paths field holding the stage's output (and its lineage.json)
    checked: bool = False  # a GX suite of the same name gates it (DVC stage ``check_<name>``)
    description: str = ""
    pipeline_file: str = "dvc.yaml"
    partitioned: bool = False  # one Dagster partition / DVC ``foreach`` item per student

    @property
    def dvc_stage(self) -> str:
        """The stage as DVC addresses it (``demo/dvc.yaml:raw_pool`` outside dvc.yaml)."""
        if self.pipeline_file == "dvc.yaml":
            return self.name
        return f"{self.pipeline_file}:{self.name}"

    def dvc_item(self, partition: str | None = None) -> str:
        """The DVC stage of one partition (``students@tiny_student``), or :attr:`dvc_stage`."""
        return f"{self.dvc_stage}@{partition}" if partition else self.dvc_stage

    @property
    def check(self) -> str | None:
        """The GX suite (``sslops check <name>``), if the node is checked."""
        return self.name if self.checked else None

    @property
    def check_stage(self) -> str | None:
        return f"check_{self.name}" if self.checked else None


GRAPH: tuple[StageSpec, ...] = (
    StageSpec(
        "raw_pool",
        (),
        "labels",
        description="The raw image pool: with data.source demo, built from Fashion-MNIST "
        "(long-tailed, duplicated, broken files) + eval set; with your own folder, observed "
        "only (file count and listing fingerprint), never written",
        pipeline_file=DEMO_FILE,
    ),
    StageSpec(
        "manifest",
        ("raw_pool",),
        "manifest_dir",
        True,
        "Every pool file decoded and described; broken files quarantined",
    ),
    StageSpec(
        "embeddings",
        ("manifest",),
        "embeddings_dir",
        description="Embeddings of unique ok pool images and of the eval set",
    ),
    StageSpec(
        "dedup",
        ("embeddings", "manifest"),
        "dedup_dir",
        True,
        "Exact, near-duplicate and eval-decontamination removal",
    ),
    StageSpec(
        "clusters",
        ("dedup", "embeddings"),
        "clusters_dir",
        description="Hierarchical k-means over deduplicated embeddings",
    ),
    StageSpec(
        "curated",
        ("clusters",),
        "curated_dir",
        True,
        "Balanced hierarchical sample at the target size",
    ),
    StageSpec(
        "teacher",
        ("curated", "manifest"),
        "teacher_dir",
        True,
        "DINOv2-style teacher pretrained on the curated set",
    ),
    StageSpec(
        "students",
        ("teacher", "curated", "manifest"),
        "students_dir",
        True,
        "Students distilled from the frozen teacher, one partition per student",
        partitioned=True,
    ),
    StageSpec(
        "report",
        ("students", "teacher", "curated", "clusters", "dedup", "manifest"),
        "reports_dir",
        True,
        "kNN of every model, curation diagnostics, report.md",
    ),
)

BY_NAME = {s.name: s for s in GRAPH}
