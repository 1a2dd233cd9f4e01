"""The ``kubernetes`` dry-run of each stage job: the Volcano Job TorchX renders, after
:func:`ssl_core.launch.volcano.harden`, checked field by field, and each task's pod validated
strictly against the Kubernetes 1.33 schema (as a core ``v1 PodTemplate``: the schema
validator knows no Volcano CRDs). No API server is contacted (``workspace=None``)."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from ssl_core.config import load_params
from ssl_core.launch.component import LaunchError, stage_app
from ssl_core.launch.launcher import scheduler_cfg, torchx_runner
from ssl_core.launch.settings import JOB_STAGES, JobResources
from ssl_core.launch.volcano import POD_UID, harden, job_labels, label_value

K8S_VERSION = "1.33.0"
SNAPSHOT = "data/.jobs/teacher-x/params.yaml"


@pytest.fixture(scope="module")
def launch():
    return load_params("params.yaml").launch.model_copy(update={"scheduler": "kubernetes"})


def _dryrun(stage: str, launch, run_id: str = "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"):
    app = stage_app(stage, launch, SNAPSHOT.replace("teacher", stage), f"sslops-{stage}")
    with torchx_runner() as runner:
        cfg = scheduler_cfg(runner, launch)
        info = runner.dryrun(app, "kubernetes", cfg=cfg, workspace=None)
    harden(info, job_labels(stage, run_id, "a" * 40 + "+dirty"))
    return cfg, yaml.safe_load(str(info.request))


@pytest.mark.parametrize("stage", sorted(JOB_STAGES))
def test_stage_job_spec(stage, launch):
    cfg, job = _dryrun(stage, launch)
    res = launch.resources(stage)
    assert cfg["namespace"] == launch.namespace and cfg["queue"] == launch.queue
    assert job["apiVersion"] == "batch.volcano.sh/v1alpha1" and job["kind"] == "Job"
    assert job["spec"]["schedulerName"] == "volcano" and job["spec"]["queue"] == launch.queue
    assert job["metadata"]["name"].startswith(f"sslops-{stage}")
    (task,) = job["spec"]["tasks"]
    pod = task["template"]
    spec, (c,) = pod["spec"], pod["spec"]["containers"]
    assert c["image"] == launch.image
    assert c["command"] == ["python", "-m", "ssl_core.launch.job", stage, "--params",
                            SNAPSHOT.replace("teacher", stage)]  # fmt: skip
    limits, requests = c["resources"]["limits"], c["resources"]["requests"]
    gpu = "nvidia.com/gpu"  # TorchX leaves it out for a CPU job (clusters: gpus 0)
    assert limits.get(gpu, "0") == requests.get(gpu, "0") == str(res.gpus)
    assert (
        limits["cpu"] == f"{res.cpu * 1000}m"
        and limits["memory"] == f"{int(res.memory_gb * 1000)}M"
    )
    assert set(requests) == set(limits)
    assert spec["serviceAccountName"] == launch.service_account
    assert spec["automountServiceAccountToken"] is False
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v}  # fmt: skip
    (vol,) = claims
    assert claims[vol] == launch.data_volume
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts[vol] == f"{launch.workdir}/data" and mounts["tmp"] == "/tmp"
    psc, csc = spec["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] and psc["runAsUser"] == POD_UID and psc["fsGroup"] == POD_UID
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["allowPrivilegeEscalation"] is False and csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"]["drop"] == ["ALL"] and "privileged" not in csc
    labels = pod["metadata"]["labels"]
    assert labels["sslops.io/stage"] == stage
    assert labels["sslops.io/git-sha"] == "a" * 40 + "-dirty"
    assert labels["sslops.io/dagster-run"] == "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"
    assert job["metadata"]["labels"]["sslops.io/stage"] == stage
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HOME"] == "/tmp" and env["SSLOPS_PROGRESS"] == "lines"
    template = {"apiVersion": "v1", "kind": "PodTemplate",
                "metadata": {"name": "t", "labels": labels}, "template": pod}  # fmt: skip
    kubernetes_validate.validate(template, K8S_VERSION, strict=True)  # raises when invalid


def test_multi_node_job_rendezvous_on_rank0(launch):
    res = JobResources(nnodes=2, nproc_per_node=4, cpu=32, memory_gb=256, gpus=4)
    _, job = _dryrun("teacher", launch.model_copy(update={"teacher": res}))
    tasks = job["spec"]["tasks"]
    assert [t["name"] for t in tasks] == ["teacher-0", "teacher-1"]
    for t in tasks:
        (c,) = t["template"]["spec"]["containers"]
        assert c["command"][:2] == ["bash", "-c"]
        cmd = c["command"][2]
        assert "-m torch.distributed.run --nproc_per_node 4 --nnodes 2 --rdzv_backend c10d" in cmd
        assert "--rdzv_endpoint ${" in cmd and ":29500" in cmd
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    first = {e["name"]: e["value"] for e in tasks[0]["template"]["spec"]["containers"][0]["env"]}
    assert first["TORCHX_RANK0_HOST"] == "localhost"  # rank 0 hosts the c10d store


def test_embed_refuses_several_processes(launch):
    bad = launch.model_copy(update={"embeddings": JobResources(nproc_per_node=2)})
    with pytest.raises(LaunchError, match="embedding runs in one process"):
        stage_app("embeddings", bad, SNAPSHOT, "sslops-embeddings")


def test_label_values_are_valid():
    assert label_value("0123abc+dirty") == "0123abc-dirty"
    assert len(label_value("x" * 100)) == 63
    assert label_value("-a/b_") == "a-b"


def test_job_spec_command_renders_without_a_cluster(capsys):
    from ssl_core.cli import main

    assert main(["job-spec", "students", "--scheduler", "kubernetes"]) == 0
    out = capsys.readouterr().out
    job = yaml.safe_load(out.split("\n", 1)[1])
    assert job["kind"] == "Job" and job["spec"]["queue"] == "sslops"
    assert main(["job-spec", "students"]) == 0  # the default scheduler: local_cwd
    assert "local_cwd" in capsys.readouterr().out
