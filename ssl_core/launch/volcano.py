"""What TorchX's ``kubernetes`` scheduler leaves out of a Volcano job, added before submission.

TorchX 0.7 renders each task's pod with an empty security context and only its own labels.
:func:`harden` adds, to every task's pod: our labels (stage, run, git sha), the restricted
security settings of ``k8s/`` (non-root uid 10001, read-only root filesystem, no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp), no service-account token (job
pods never talk to the API), and a writable ``/tmp``.
"""

from __future__ import annotations

import re
from typing import Any

from torchx.specs import AppDryRunInfo

#: the uid/gid of the image's user (k8s/Dockerfile) and of every pod in k8s/
POD_UID = 10001
LABEL_PREFIX = "sslops.io/"


def label_value(value: str) -> str:
    """A Kubernetes label value: <= 63 of ``[A-Za-z0-9_.-]``, alphanumeric at both ends."""
    v = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63]
    return v.strip("-_.")


def job_labels(stage: str, run_id: str, git_sha: str) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/part-of": "sslops",
        "app.kubernetes.io/component": "job",
        LABEL_PREFIX + "stage": label_value(stage),
        LABEL_PREFIX + "git-sha": label_value(git_sha),
    }
    if run_id:
        labels[LABEL_PREFIX + "dagster-run"] = label_value(run_id)
    return labels


def _harden_pod(pod: Any, labels: dict[str, str]) -> None:
    from kubernetes.client.models import (
        V1Capabilities,
        V1EmptyDirVolumeSource,
        V1PodSecurityContext,
        V1SeccompProfile,
        V1SecurityContext,
        V1Volume,
        V1VolumeMount,
    )

    pod.metadata.labels = {**(pod.metadata.labels or {}), **labels}
    spec = pod.spec
    spec.automount_service_account_token = False
    spec.security_context = V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=POD_UID,
        run_as_group=POD_UID,
        fs_group=POD_UID,
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
    )
    spec.volumes = [*(spec.volumes or []), V1Volume(name="tmp", empty_dir=V1EmptyDirVolumeSource())]
    for c in spec.containers:
        if c.security_context is not None and c.security_context.privileged:
            raise ValueError("a job container asks for privileged mode (host devices): refused")
        c.security_context = V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            capabilities=V1Capabilities(drop=["ALL"]),
        )
        c.volume_mounts = [*(c.volume_mounts or []), V1VolumeMount(name="tmp", mount_path="/tmp")]


def harden(info: AppDryRunInfo, labels: dict[str, str]) -> None:
    """Patch the dry-run request of a ``kubernetes`` submission in place."""
    resource = info.request.resource
    resource.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    for task in resource["spec"]["tasks"]:
        _harden_pod(task["template"], labels)
