"""Which file each lineage input hash was taken from, and so which stage produced it.

A stage's ``lineage.json`` records ``input_hashes`` by name only (``{"curated": "0604…"}``); this
table says where each named input lives (a ``params.paths`` folder + file name) and which asset
writes it. ``ssl_core`` never imports ``orchestration``: ``tests/integration/test_lineage_cli.py``
asserts this table agrees with ``orchestration/graph.py`` (same assets, output folders, and
every upstream here is a dependency there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssl_core.data.eval_set import EVAL_SET
from ssl_core.stages.cluster import ASSIGNMENTS
from ssl_core.stages.curate import CURATED
from ssl_core.stages.ingest import MANIFEST

MODEL_FILE = "model.safetensors"  # ssl_core.train.outputs.MODEL (not imported: pulls in torch)
POOL_LISTING = "pool_listing.csv"  # written by ingest: the pool's identity (path, sha256)


@dataclass(frozen=True)
class Input:
    """Where a recorded input hash came from: ``file`` in the ``params.paths.<dir_key>`` folder,
    written by ``asset``; ``asset=None``: outside the graph (not checked)."""

    asset: str | None
    dir_key: str = ""
    file: str = ""


@dataclass(frozen=True, eq=False)
class Node:
    asset: str  # the Dagster asset name (orchestration/graph.py)
    stage: str  # the ``stage`` field of its lineage.json
    cli: str  # the sslops command that (re)builds it
    out_dir_key: str  # params.paths field of its output folder (which holds lineage.json)
    inputs: dict[str, Input] = field(default_factory=dict)  # lineage input name → origin

    @property
    def upstream(self) -> tuple[str, ...]:
        seen = [i.asset for i in self.inputs.values() if i.asset and i.asset != self.asset]
        return tuple(dict.fromkeys(seen))


_MANIFEST = Input("raw_manifest", "manifest_dir", MANIFEST)
_EVAL_SET = Input("raw_manifest", "manifest_dir", EVAL_SET)
_POOL_EMB = Input("embeddings", "embeddings_dir", "pool.npy")
_CURATED = Input("curated_dataset", "curated_dir", CURATED)
_TEACHER = Input("teacher", "teacher_dir", MODEL_FILE)

#: graph order (upstream first); the raw pool's lineage exists only for the demo (its builder
#: writes it next to the eval set); ingest fingerprints any pool as pool_listing.csv
NODES: tuple[Node, ...] = (
    Node("raw_pool", "import_demo", "import-demo", "labels", {"source": Input(None)}),
    Node(
        "raw_manifest",
        "ingest",
        "ingest",
        "manifest_dir",
        {"pool_listing": Input("raw_pool", "manifest_dir", POOL_LISTING), "eval_set": _EVAL_SET},
    ),
    Node(
        "embeddings",
        "embed",
        "embed",
        "embeddings_dir",
        {"manifest": _MANIFEST, "eval_set": _EVAL_SET},
    ),
    Node(
        "dedup",
        "dedup",
        "dedup",
        "dedup_dir",
        {
            "manifest": _MANIFEST,
            "embeddings": _POOL_EMB,
            "eval_embeddings": Input("embeddings", "embeddings_dir", "eval.npy"),
        },
    ),
    Node(
        "clusters",
        "cluster",
        "cluster",
        "clusters_dir",
        {"kept": Input("dedup", "dedup_dir", "kept.parquet"), "embeddings": _POOL_EMB},
    ),
    Node(
        "curated_dataset",
        "curate",
        "curate",
        "curated_dir",
        {"assignments": Input("clusters", "clusters_dir", ASSIGNMENTS)},
    ),
    Node("teacher", "train_teacher", "train-teacher", "teacher_dir", {"curated": _CURATED}),
    Node(
        "students",
        "distill",
        "distill",
        "students_dir",
        {"curated": _CURATED, "teacher": _TEACHER},
    ),
    Node(
        "eval_reports",
        "evaluate",
        "evaluate",
        "reports_dir",
        {"teacher": _TEACHER, "curated": _CURATED},
    ),
)
BY_ASSET = {n.asset: n for n in NODES}
ORDER = {n.asset: i for i, n in enumerate(NODES)}
#: other names people use for an asset: its stage and command names, and the short ones
ALIASES = {
    **{n.stage: n.asset for n in NODES},
    **{n.cli: n.asset for n in NODES},
    "pool": "raw_pool",
    "manifest": "raw_manifest",
    "curated": "curated_dataset",
    "reports": "eval_reports",
}
