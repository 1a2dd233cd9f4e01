"""The TorchX component of a stage job: one ``AppDef`` per heavy stage.

The job runs ``python -m ssl_core.launch.job <stage> --params <snapshot> [--student N]``; with more than one
process it runs under ``torchrun`` (``--standalone`` on one node, c10d rendezvous on rank 0's
host across nodes, as TorchX's own ``dist.ddp`` component does). On ``local_cwd`` the job is a
process of this interpreter in the project folder; on a container scheduler it runs ``python``
in ``launch.image`` with the data volume mounted at ``<workdir>/data``.
"""

from __future__ import annotations

import shlex
import sys

from torchx import specs

from ssl_core.launch.settings import JOB_STAGES, JobResources, LaunchConfig

JOB_MODULE = "ssl_core.launch.job"
RDZV_PORT = 29500

#: environment of every job process (on top of the scheduler's)
JOB_ENV = {
    "SSLOPS_PROGRESS": "lines",  # progress bars as log lines (ssl_core.utils.progress)
    "OMP_WAIT_POLICY": "PASSIVE",  # spinning OpenMP threads: 4x slower on busy cores (cli.py)
    "PYTHONUNBUFFERED": "1",
    "LOGLEVEL": "WARNING",  # torchrun's own logging
}
#: extra environment in containers: a read-only root filesystem leaves /tmp writable only
CONTAINER_ENV = {
    "HOME": "/tmp",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "TORCHINDUCTOR_CACHE_DIR": "/tmp/inductor",
}


class LaunchError(ValueError):
    """A ``launch:`` setting that cannot run; the message says what to change."""


def check_resources(stage: str, res: JobResources) -> None:
    """Refuse process layouts a stage cannot use."""
    if stage == "embeddings" and res.nnodes * res.nproc_per_node > 1:
        raise LaunchError(
            "launch.embeddings: embedding runs in one process (its cache is written by one writer); "
            f"set nnodes: 1 and nproc_per_node: 1 (got {res.nnodes}x{res.nproc_per_node})"
        )


def job_command(
    stage: str,
    params_path: str,
    res: JobResources,
    python: str,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """``[entrypoint, *args]`` of the job's processes (the same on every node); ``extra``:
    more arguments of the job entry point (``--student NAME``)."""
    job = ["-m", JOB_MODULE, stage, "--params", params_path, *extra]
    if res.nnodes == 1 and res.nproc_per_node == 1:
        return [python, *job]
    run = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(res.nproc_per_node)]
    if res.nnodes == 1:
        return [*run, "--standalone", *job]
    # across nodes: rank 0's host comes from the environment variable TorchX names in the
    # rank0_env macro, expanded by the shell on each node
    endpoint = f"${{{specs.macros.rank0_env}:=localhost}}:{RDZV_PORT}"
    run += ["--nnodes", str(res.nnodes), "--rdzv_backend", "c10d", "--rdzv_id", specs.macros.app_id]
    cmd = " ".join(shlex.quote(a) for a in [*run, "--rdzv_endpoint"])
    return ["bash", "-c", f"{cmd} {endpoint} {' '.join(shlex.quote(a) for a in job)}"]


def stage_app(
    stage: str,
    launch: LaunchConfig,
    params_path: str,
    name: str,
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> specs.AppDef:
    """The ``AppDef`` that runs ``stage`` with the params snapshot at ``params_path``.

    Args:
        stage: node name of a job stage (``embeddings``, ``teacher``, ``students``).
        launch: the ``launch:`` section (scheduler, image, volume, resources).
        params_path: params file the job reads, relative to the project folder (the job's cwd).
        name: job name (TorchX appends a unique suffix on submission).
        env: extra environment (e.g. the Dagster run id, for the record).
        extra: more arguments of the job entry point (``--student NAME``).
    """
    if stage not in JOB_STAGES:
        raise LaunchError(f"{stage!r} is not a job stage ({', '.join(JOB_STAGES)})")
    res = launch.resources(stage)
    check_resources(stage, res)
    on_host = launch.on_host
    entrypoint, *args = job_command(
        stage, params_path, res, sys.executable if on_host else "python", extra
    )
    role = specs.Role(
        name=stage.replace("_", "-"),
        image="" if on_host else launch.image,
        entrypoint=entrypoint,
        args=args,
        env={**JOB_ENV, **({} if on_host else CONTAINER_ENV), **(env or {})},
        num_replicas=res.nnodes,
        resource=specs.Resource(
            cpu=res.cpu,
            gpu=0 if on_host else res.gpus,  # local_cwd: the job sees every GPU of the host
            memMB=int(res.memory_gb * 1000),
        ),
        port_map={"c10d": RDZV_PORT} if res.nnodes > 1 else {},
        mounts=[]
        if on_host
        else [specs.VolumeMount(src=launch.data_volume, dst_path=f"{launch.workdir}/data")],
    )
    return specs.AppDef(name=name, roles=[role])
