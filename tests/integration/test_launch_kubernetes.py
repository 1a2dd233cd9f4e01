"""The client side of a ``kubernetes`` stage job, against a local STAND-IN for the Kubernetes
API server (``tests/integration/k8s_standin.py``), NOT a cluster.

``run_job`` really goes through TorchX's ``kubernetes`` scheduler and the ``kubernetes`` python
client over HTTP (kubeconfig from ``$KUBECONFIG``): the submission (retried after a transient
503, not after a 403), the Volcano Job we send (hardened), the job phases followed to the end,
the pod log streamed into ``job.log``, and the cancel (DELETE) on SIGINT. The stand-in answers
with scripted phases and logs: no pod runs, and nothing here shows that a real API server,
Volcano or a GPU node accepts the job.
"""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from ssl_core.config import load_params
from ssl_core.launch.component import stage_app
from ssl_core.launch.launcher import JobFailed, JobInterrupted, run_job
from ssl_core.launch.stage_job import _result_line
from ssl_core.launch.volcano import POD_UID, harden, job_labels
from tests.conftest import REPO
from tests.integration.k8s_standin import JOB, JOB_STATUS, JOBS, POD_LOG, K8sStandIn

pytestmark = [
    pytest.mark.timeout(60),
    # kubernetes 36 calls urllib3's deprecated HTTPResponse.getheader(s) on every response
    pytest.mark.filterwarnings("ignore:HTTPResponse.getheader:DeprecationWarning"),
]

STAGE = "teacher"
SNAPSHOT = "data/.jobs/x/params.yaml"
RESULT = 'SSLOPS_RESULT {"stage": "teacher", "steps": 3}'
OK_LOG = (
    "sslops teacher (job): world 1, device cuda:0",
    "train: epoch 1/1 step 3/3 loss 2.0794",
    RESULT,
)
FAILED_LOG = (
    "train: epoch 1/1 step 1/3 loss nan",
    "Traceback (most recent call last):",
    "ValueError: loss is nan at step 1",
    "sslops teacher (job): error: loss is nan at step 1",
)
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")
# an RFC 3339 time, as the API server puts before each log line with timestamps=true
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z "


@pytest.fixture
def launch():
    return load_params(REPO / "params.yaml").launch.model_copy(
        update={
            "scheduler": "kubernetes",
            "submit_retries": 2,
            "poll_interval_s": 0.05,
            "heartbeat_s": 0.5,
        }
    )


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """Starts stand-ins for the API server (``make(**script)``); each is stopped at teardown."""
    import kubernetes.config.kube_config as kube_config

    started: list[K8sStandIn] = []

    def make(**script) -> K8sStandIn:
        server = K8sStandIn(**script).start()
        started.append(server)
        kubeconfig = str(server.write_kubeconfig(tmp_path / "kubeconfig", namespace="sslops"))
        monkeypatch.setenv("KUBECONFIG", kubeconfig)
        # the client reads $KUBECONFIG once, when kubernetes.config is first imported
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", kubeconfig)
        for var in PROXY_VARS:  # a proxy from the environment would swallow 127.0.0.1
            monkeypatch.delenv(var, raising=False)
        return server

    yield make
    for server in started:
        server.stop()


def _app(launch):
    return stage_app(STAGE, launch, SNAPSHOT, name=f"sslops-{STAGE}")


def _patch(info) -> None:
    harden(info, job_labels(STAGE, "run123", "abc"))


def _run(launch, tmp_path: Path, **kw):
    status, echo = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    try:
        result = run_job(_app(launch), launch, tmp_path / "job.log", patch=_patch, echo=echo,
                         status_out=status, **kw)  # fmt: skip
    except BaseException as e:
        e.status_lines, e.echo = status.getvalue(), echo.getvalue()  # for the assertions
        raise
    return result, status.getvalue(), echo.getvalue(), time.monotonic() - t0


def _handle_re(name: str) -> str:
    return rf"kubernetes://[\w-]+/sslops:{re.escape(name)}"


def test_job_is_submitted_after_a_503_followed_to_success_and_its_log_kept(
    standin, launch, tmp_path
):
    """Stand-in API server (not a cluster): 503 then 201 on create; phases Pending → Running
    → Completed; the pod log ends with the job's result line."""
    api = standin(
        phases=("Pending", "Pending", "Running", "Running", "Completed"), log_lines=OK_LOG
    )
    result, status, echo, wall = _run(launch, tmp_path)
    assert result.state == "SUCCEEDED"

    # the submission: the first POST got 503, the same request was sent again after 1 s
    first, second = api.calls("POST")
    assert first.path == second.path == "/apis/batch.volcano.sh/v1alpha1/namespaces/sslops/jobs"
    assert first.body == second.body
    # one status line per failed try: the HTTP status and the server's message, one line
    assert "job sslops-teacher: submit failed (HTTP 503" in status
    assert "; retry in 1s\n" in status
    assert wall >= 1.0

    job = second.body
    name = job["metadata"]["name"]
    assert re.fullmatch(_handle_re(name), result.handle)
    assert job["apiVersion"] == "batch.volcano.sh/v1alpha1" and job["kind"] == "Job"
    assert job["spec"]["queue"] == "sslops" and job["spec"]["schedulerName"] == "volcano"
    labels = {"sslops.io/stage": STAGE, "sslops.io/dagster-run": "run123",
              "sslops.io/git-sha": "abc"}  # fmt: skip
    assert labels.items() <= job["metadata"]["labels"].items()
    (task,) = job["spec"]["tasks"]
    pod = task["template"]
    assert labels.items() <= pod["metadata"]["labels"].items()
    spec = pod["spec"]
    (c,) = spec["containers"]
    assert spec["serviceAccountName"] == "sslops-job"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == POD_UID
    assert c["image"] == launch.image
    assert c["command"] == ["python", "-m", "ssl_core.launch.job", STAGE, "--params", SNAPSHOT]
    gpus = str(launch.teacher.gpus)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert c["resources"]["requests"]["nvidia.com/gpu"] == gpus
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in spec["volumes"] if "persistentVolumeClaim" in v}  # fmt: skip
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert {mounts[v]: claim for v, claim in claims.items()} == {"/app/data": "sslops-data"}
    assert mounts["tmp"] == "/tmp"
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }

    # followed: phases read until Completed, the pod log streamed (follow) into job.log
    statuses = api.calls("GET", JOB_STATUS)
    assert {r.path for r in statuses} == {
        f"/apis/batch.volcano.sh/v1alpha1/namespaces/sslops/jobs/{name}/status"
    }
    assert api.phases_served[-1] == "Completed"
    (log_req,) = api.calls("GET", POD_LOG)
    # Volcano names a pod <job>-<task>-<index>; TorchX makes one task per replica, "<role>-<k>"
    assert log_req.path == f"/api/v1/namespaces/sslops/pods/{name}-teacher-0-0/log"
    assert log_req.query["follow"] == ["True"] and log_req.query["timestamps"] == ["True"]
    log = (tmp_path / "job.log").read_text().splitlines()
    assert len(log) == len(OK_LOG)
    for got, line in zip(log, OK_LOG, strict=True):
        assert re.fullmatch(STAMP + re.escape(line), got)  # as the API server sent it
    assert echo.splitlines() == log
    assert result.lines == log
    assert _result_line(result.lines) == {"stage": STAGE, "steps": 3}  # what the stage returns

    # status lines: submitted, then each state as it changed
    assert f"job {result.handle}: submitted to kubernetes; log: {tmp_path / 'job.log'}" in status
    states = re.findall(rf"^job {re.escape(result.handle)}: (\w+) \(\d+s\)", status, re.M)
    assert states[0] in ("PENDING", "RUNNING") and states[-1] == "SUCCEEDED"
    assert "PENDING" in states and "RUNNING" in states
    assert api.calls("DELETE") == []


def test_failed_job_raises_with_its_handle_and_last_log_lines(standin, launch, tmp_path):
    """Stand-in API server (not a cluster): phases end in ``Failed``."""
    api = standin(phases=("Pending", "Running", "Failed"), log_lines=FAILED_LOG, post_errors=())
    with pytest.raises(JobFailed) as ei:
        _run(launch, tmp_path)
    e = ei.value
    (post,) = api.calls("POST")
    name = post.body["metadata"]["name"]
    assert re.fullmatch(_handle_re(name), e.handle)
    assert e.state == "FAILED"
    msg = str(e)
    assert f"job {e.handle} ended FAILED" in msg
    for line in FAILED_LOG:  # quoted, with the API server's timestamps
        assert re.search(r"  \| " + STAMP + re.escape(line) + "$", msg, re.M), line
    assert "errors it reported:" in msg
    assert re.search(r"  ! " + STAMP + re.escape(FAILED_LOG[-1]), msg)
    assert f"full log: {tmp_path / 'job.log'}" in msg
    assert [ln.split(" ", 1)[1] for ln in e.tail] == list(FAILED_LOG)
    assert api.calls("DELETE") == []  # a job that ended is not cancelled


def test_forbidden_submission_is_not_retried(standin, launch, tmp_path):
    """Stand-in API server (not a cluster): 403 Forbidden on create (RBAC)."""
    api = standin(post_errors=(403, 403, 403))
    with pytest.raises(JobFailed) as ei:  # the CLI turns it into a clear stage failure
        _run(launch, tmp_path)
    assert len(api.calls("POST")) == 1  # not retried
    e = ei.value
    assert e.state == "NOT_SUBMITTED" and "could not submit the job to kubernetes" in str(e)
    api_error = e.__cause__
    assert isinstance(api_error, ApiException)
    assert api_error.status == 403 and api_error.reason == "Forbidden"
    msg = str(e)  # what the user reads: the status and the API server's own message
    assert "403" in msg and "Forbidden" in msg
    assert re.search(r'cannot create resource \\?"jobs\\?" in API group \\?"batch.volcano.sh', msg)
    assert "retry" not in e.status_lines and "submitted" not in e.status_lines
    assert api.calls("GET") == [] and api.calls("DELETE") == []
    assert not (tmp_path / "job.log").exists()


def _interrupt_when_running(api: K8sStandIn) -> threading.Thread:
    """SIGINT to this process once the stand-in has reported the job Running (``run_job`` is
    then in its status loop, where its handler turns SIGINT into ``JobInterrupted``)."""

    def send() -> None:
        if api.running_served.wait(20):
            api.log_opened.wait(5)
            os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def test_sigint_cancels_the_running_job(standin, launch, tmp_path):
    """Stand-in API server (not a cluster): the job stays Running and its pod log open until
    the job is deleted; SIGINT (sent to this process, handled in the main thread) must
    DELETE it before ``JobInterrupted`` propagates."""
    assert threading.current_thread() is threading.main_thread()
    api = standin(phases=("Pending", "Running"), post_errors=(), log_lines=OK_LOG[:2],
                  hold_log=True)  # fmt: skip
    sender = _interrupt_when_running(api)
    t0 = time.monotonic()
    try:
        with pytest.raises(JobInterrupted, match="SIGINT") as ei:
            _run(launch, tmp_path)
    finally:
        sender.join(30)
    assert api.running_served.is_set() and api.log_opened.is_set()
    (post,) = api.calls("POST")
    name = post.body["metadata"]["name"]
    (delete,) = api.calls("DELETE")
    assert JOB.match(delete.path) and delete.path.endswith(f"/namespaces/sslops/jobs/{name}")
    assert "interrupted: cancelling the job" in ei.value.status_lines
    assert api.jobs == {}  # deleted
    # the log stream ended with the job: the follower did not wait out its 5 s
    assert time.monotonic() - t0 < 5
    assert (tmp_path / "job.log").read_text().count("\n") == 2
    assert JOBS.match(post.path) and api.phases_served[-1] == "Running"


# -- failure modes found with the stand-in (each was a launcher bug, fixed) ----------------


def test_retry_after_a_committed_create_follows_the_job(standin, launch, tmp_path):
    """Stand-in API server (not a cluster): the first create is stored but answered 504 (a
    timeout after the commit); the retry gets 409 AlreadyExists for the same unique name."""
    api = standin(post_errors=(504,), created_despite_error=True, log_lines=OK_LOG)
    result, *_ = _run(launch, tmp_path)
    first, second = api.calls("POST")
    assert first.body == second.body  # the same unique name: the job is ours
    assert result.state == "SUCCEEDED"


def test_cancel_of_a_deleted_job_reports_no_failure(standin, launch, tmp_path, capfd):
    """Stand-in API server (not a cluster): as in the SIGINT test; the job is gone after the
    DELETE (404), as a Volcano job without finalizers is."""
    api = standin(phases=("Pending", "Running"), post_errors=(), hold_log=True)
    sender = _interrupt_when_running(api)
    try:
        with pytest.raises(JobInterrupted):
            _run(launch, tmp_path)
    finally:
        sender.join(30)
    assert len(api.calls("DELETE")) == 1
    assert "stop it by hand" not in capfd.readouterr().err


def test_log_of_a_job_that_fails_before_its_log_could_be_read_is_quoted(standin, launch, tmp_path):
    """Stand-in API server (not a cluster): the log is a 400 "waiting to start" while the job is
    Pending (~1 s here, less than the follower's 2 s between tries); the job then fails at
    once (an import error at start-up, say)."""
    standin(phases=("Pending",) * 20 + ("Failed",), post_errors=(), log_lines=FAILED_LOG,
            container_waiting_while_pending=True)  # fmt: skip
    with pytest.raises(JobFailed) as ei:
        _run(launch, tmp_path)
    assert "ValueError: loss is nan at step 1" in str(ei.value)
