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
POOL_LISTING = "pool_listing.csv"  # by the manifest stage: the pool's identity (path, sha256)


@dataclass(frozen=True)
class Input:
    """Where a recorded input hash came from: ``file`` in the ``params.paths.<dir_key>`` folder,
    written by ``asset``; ``asset=None``: outside the graph (not checked)."""

    asset: str | None
    dir_key: str = ""
    file: str = ""


@dataclass(frozen=True, eq=False)
class Node:
    asset: str  # the node's one name: Dagster asset, DVC stage, sslops command, lineage stage
    out_dir_key: str  # params.paths field of its output folder (which holds lineage.json)
    inputs: dict[str, Input] = field(default_factory=dict)  # lineage input name → origin

    def command(self, key: str) -> str:
        """The sslops command that (re)builds ``key`` (``students/<name>``: that student)."""
        _, _, part = key.partition("/")
        return f"{self.asset} --student {part}" if part else self.asset

    @property
    def upstream(self) -> tuple[str, ...]:
        seen = [i.asset for i in self.inputs.values() if i.asset and i.asset != self.asset]
        return tuple(dict.fromkeys(seen))


_MANIFEST = Input("manifest", "manifest_dir", MANIFEST)
_EVAL_SET = Input("manifest", "manifest_dir", EVAL_SET)
_POOL_EMB = Input("embeddings", "embeddings_dir", "pool.npy")
_CURATED = Input("curated", "curated_dir", CURATED)
_TEACHER = Input("teacher", "teacher_dir", MODEL_FILE)

#: graph order (upstream first); the raw pool's lineage exists only for the demo (its builder
#: writes it next to the eval set); ingest fingerprints any pool as pool_listing.csv
NODES: tuple[Node, ...] = (
    Node("raw_pool", "labels", {"source": Input(None)}),
    Node(
        "manifest",
        "manifest_dir",
        {"pool_listing": Input("raw_pool", "manifest_dir", POOL_LISTING), "eval_set": _EVAL_SET},
    ),
    Node(
        "embeddings",
        "embeddings_dir",
        {"manifest": _MANIFEST, "eval_set": _EVAL_SET},
    ),
    Node(
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
        "clusters_dir",
        {"kept": Input("dedup", "dedup_dir", "kept.parquet"), "embeddings": _POOL_EMB},
    ),
    Node(
        "curated",
        "curated_dir",
        {"assignments": Input("clusters", "clusters_dir", ASSIGNMENTS)},
    ),
    Node("teacher", "teacher_dir", {"curated": _CURATED}),
    Node(
        "students",
        "students_dir",
        {"curated": _CURATED, "teacher": _TEACHER},
    ),
    Node(
        "report",
        "reports_dir",
        {"teacher": _TEACHER, "curated": _CURATED},
    ),
)
BY_ASSET = {n.asset: n for n in NODES}
ORDER = {n.asset: i for i, n in enumerate(NODES)}
#: other spellings of a node name: the hyphen one (``raw-pool``) and short ones
ALIASES = {
    **{n.asset.replace("_", "-"): n.asset for n in NODES if "_" in n.asset},
    "pool": "raw_pool",
    "reports": "report",
}
