"""One name per graph node: its Dagster asset, its DVC stage and its ``sslops`` command.

The names are the artifacts the nodes produce. ``orchestration/graph.py`` holds the edges;
this table says which module runs each node (``sslops <name>`` and the TorchX job entry point
``ssl_core.launch.job`` both dispatch through it), and which old command names were renamed.
"""

from __future__ import annotations

#: node name → the stage module whose ``run(params, progress)`` does its work (graph order)
STAGE_MODULES = {
    "raw_pool": "ssl_core.stages.import_demo",
    "manifest": "ssl_core.stages.ingest",
    "embeddings": "ssl_core.stages.embed",
    "dedup": "ssl_core.stages.dedup",
    "clusters": "ssl_core.stages.cluster",
    "curated": "ssl_core.stages.curate",
    "teacher": "ssl_core.stages.train_teacher",
    "students": "ssl_core.stages.distill",
    "report": "ssl_core.stages.evaluate",
}

#: nodes whose work runs as a TorchX job (``launch.<name>`` holds its resources)
JOB_STAGES = ("embeddings", "clusters", "teacher", "students")

#: job stages that run in the calling process when ``launch.<name>`` asks for one rank
#: (``nnodes`` x ``nproc_per_node`` = 1), and as a job only beyond that: clusters (faiss
#: in-process; ``ssl_core.curation.distributed_kmeans`` under torchrun)
JOB_WHEN_DISTRIBUTED = ("clusters",)

#: job stages whose job runs another module than their in-process command (still a
#: ``run(params, progress)``): the distributed clusters stage. Kept out of the stage module so
#: the stages that import ``ssl_core.stages.cluster`` (for its table names) do not depend on it.
JOB_ENTRY_MODULES = {"clusters": "ssl_core.launch.clusters_job"}

#: command names used before the nodes had one name (no aliases: a helpful error instead)
RENAMED = {
    "import-demo": "raw_pool",
    "ingest": "manifest",
    "embed": "embeddings",
    "cluster": "clusters",
    "curate": "curated",
    "train-teacher": "teacher",
    "distill": "students",
    "evaluate": "report",
}


def canonical(command: str) -> str:
    """``raw-pool`` → ``raw_pool``: the hyphen spelling of a node name is the same command."""
    name = command.replace("-", "_")
    return name if name in STAGE_MODULES else command


#: the report's name for the model the students were distilled from when ``distill.teacher``
#: points elsewhere than the teacher stage's output (e.g. an official DINOv2 backbone)
DISTILL_TEACHER = "distill_teacher"
