"""``launch:`` in params.yaml: where the heavy stages (embeddings, clusters, teacher,
students) run.

A stage command (``sslops teacher``) submits its work as a TorchX job to
``launch.scheduler``: ``local_cwd`` (default: processes on this machine, from the project
folder) or ``kubernetes`` (a Volcano job on a GPU cluster; image, namespace, queue, service
account and the data volume below). Switching that one key is the only change a cluster user
makes in the project; the cluster side lives in ``k8s/``.

How a job runs does not change what it computes, so these keys are not part of a stage's
params, with two exceptions, which dvc.yaml lists as those stages' params: the process counts
of teacher and students (``nnodes`` x ``nproc_per_node`` ranks, each with ``batch_size``
images, make the global batch) and of clusters (one rank: faiss k-means in the calling
process; more: ``ssl_core.curation.distributed_kmeans`` as a job, equally valid but different
clusters; see docs/curation.md, "Curating beyond one machine").
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# stages whose work runs as a TorchX job; ``launch.<stage>`` holds each one's resources
from ssl_core.stages.names import JOB_STAGES, JOB_WHEN_DISTRIBUTED

#: set by the Dagster glue for a stage's subprocess: ties a job (labels, records) to its run
RUN_ID_ENV = "SSLOPS_DAGSTER_RUN_ID"

#: schedulers that run processes on the submitting machine, in the project folder
HOST_SCHEDULERS = ("local_cwd",)


class JobResources(BaseModel):
    """Resources of one stage's job. ``local_cwd`` uses only the process counts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nnodes: int = Field(1, ge=1, description="nodes (pods); > 1 runs torchrun with c10d rendezvous")
    nproc_per_node: int = Field(1, ge=1, description="processes per node (torchrun ranks)")
    cpu: int = Field(4, gt=0, description="CPU cores per node (limit; request slightly lower)")
    memory_gb: float = Field(16, gt=0, description="memory per node, GB (limit)")
    gpus: int = Field(0, ge=0, description="nvidia.com/gpu per node")

    @property
    def ranks(self) -> int:
        """Processes of the job over all nodes (``nnodes`` x ``nproc_per_node``)."""
        return self.nnodes * self.nproc_per_node


class LaunchConfig(BaseModel):
    """Scheduler, its options and per-stage resources for the TorchX jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduler: str = Field(
        "local_cwd",
        description="TorchX scheduler: local_cwd (this machine) | kubernetes (Volcano) | any "
        "other TorchX scheduler name",
    )
    scheduler_args: dict[str, Any] = Field(
        default_factory=dict,
        description="extra TorchX run options of the scheduler (e.g. {priority_class: high}); "
        "namespace/queue/service_account come from the keys below",
    )
    image: str = Field(
        "sslops:0.1.0", description="container image of the project (k8s/Dockerfile)"
    )
    namespace: str = Field("sslops", description="Kubernetes namespace of the jobs (k8s/)")
    queue: str = Field("sslops", description="Volcano queue (k8s/)")
    service_account: str = Field("sslops-job", description="service account of job pods (k8s/)")
    data_volume: str = Field(
        "sslops-data", description="PersistentVolumeClaim with data/ and the artifacts (k8s/)"
    )
    workdir: str = Field(
        "/app", description="project folder inside the image; the data volume is at <workdir>/data"
    )
    submit_retries: int = Field(4, ge=0, description="retries of a submission on API errors")
    poll_interval_s: float = Field(1.0, gt=0, description="seconds between job status polls")
    heartbeat_s: float = Field(30.0, gt=0, description="seconds between status lines on stdout")
    log_tail_lines: int = Field(40, ge=1, description="job log lines quoted when a job fails")
    stall_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="a RUNNING job that writes no log line (progress lines included) for this "
        "long is cancelled and its stage fails quoting its last lines; raise it for stages with "
        "very long silent steps",
    )
    embeddings: JobResources = JobResources(cpu=8, memory_gb=32, gpus=1)
    clusters: JobResources = Field(
        JobResources(cpu=4, memory_gb=16, gpus=0),
        description="1x1 (default): faiss k-means in the calling process, no job; more ranks: "
        "distributed k-means as a job (gloo on CPU; gpus > 0: NCCL, one GPU per process)",
    )
    teacher: JobResources = JobResources(cpu=8, memory_gb=64, gpus=1)
    students: JobResources = JobResources(cpu=8, memory_gb=64, gpus=1)

    def resources(self, stage: str) -> JobResources:
        """Resources of a job stage, by node name (``teacher``)."""
        if stage not in JOB_STAGES:
            raise KeyError(f"{stage!r} is not a job stage ({', '.join(JOB_STAGES)})")
        return getattr(self, stage)

    def runs_as_job(self, stage: str) -> bool:
        """Whether ``stage`` is submitted as a TorchX job (clusters: only with > 1 rank)."""
        if stage not in JOB_STAGES:
            return False
        return stage not in JOB_WHEN_DISTRIBUTED or self.resources(stage).ranks > 1

    @property
    def on_host(self) -> bool:
        """Jobs run on this machine from the project folder (no image, no volume)."""
        return self.scheduler in HOST_SCHEDULERS
