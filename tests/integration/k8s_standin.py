"""A small local STAND-IN for the Kubernetes API server, for client-side tests. Not a cluster.

Nothing is scheduled and no pod runs: a stdlib ``http.server`` on 127.0.0.1 answers only the
few REST calls TorchX's ``kubernetes`` scheduler (``kubernetes`` python client) makes for a
Volcano job, with scripted answers, and records every request. What it checks is the client
side of a submission: the request we send, the retry on a transient error, how job phases,
pod logs and a cancel are followed. Whether a real API server, Volcano or a GPU node accept
the job is out of its reach (``tests/unit/launch/test_kubernetes_spec.py`` validates the pod
against the Kubernetes schema; a real cluster is the only full check).

Answered (``{ns}``: any namespace; everything else gets a 404 ``Status``):

- ``POST /apis/batch.volcano.sh/v1alpha1/namespaces/{ns}/jobs``: the first
  ``len(post_errors)`` calls get those HTTP codes with a Kubernetes ``Status`` body, later
  ones ``201`` and the job (the body echoed, with server metadata). ``created_despite_error``
  stores the job on an error answer too (a create that timed out after it was committed).
- ``GET .../jobs/{name}/status``: the job, ``status.state.phase`` taken from ``phases``, one
  step per call, the last one repeated; ``404`` once the job is deleted.
- ``GET /api/v1/namespaces/{ns}/pods/{job}-{task}-0/log``: ``log_lines`` (each prefixed with
  an RFC 3339 time when ``timestamps=true``, as the API server does), then the stream closes;
  with ``hold_log`` a followed stream stays open until the job is deleted (a running pod);
  with ``container_waiting_while_pending`` it is a ``400`` ("waiting to start") while the
  last phase served is ``Pending``, as for a pod whose container has not started.
- ``DELETE .../jobs/{name}``: ``200`` and a ``Success`` status; later GETs get ``404``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

VOLCANO = "/apis/batch.volcano.sh/v1alpha1/namespaces/(?P<ns>[^/]+)/jobs"
JOBS = re.compile(f"^{VOLCANO}$")
JOB = re.compile(f"^{VOLCANO}/(?P<name>[^/]+)$")
JOB_STATUS = re.compile(f"^{VOLCANO}/(?P<name>[^/]+)/status$")
POD_LOG = re.compile("^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/log$")
#: Volcano job phase → the phase of its tasks' pods in ``status.taskStatusCount``
TASK_PHASE = {"Pending": "Pending", "Running": "Running", "Completed": "Succeeded",
              "Failed": "Failed", "Aborted": "Failed", "Terminated": "Failed"}  # fmt: skip
REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists",
           429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
           504: "Timeout"}  # fmt: skip


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any  # parsed JSON, or None


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _flag(query: dict[str, list[str]], key: str) -> bool:
    """A boolean query parameter as the API server (Go's ``strconv.ParseBool``) reads it: the
    python client sends ``True``."""
    return query.get(key, [""])[-1] in ("1", "t", "T", "true", "True", "TRUE")


def status_body(code: int, message: str, **details: str) -> dict[str, Any]:
    """A Kubernetes ``Status`` object (what the API server sends with an error)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": REASONS.get(code, "Unknown"),
        "details": details,
        "code": code,
    }


class K8sStandIn:
    """Stand-in for the Kubernetes API server (see the module docstring); not a cluster."""

    def __init__(
        self,
        phases: Sequence[str] = ("Pending", "Running", "Completed"),
        post_errors: Sequence[int] = (503,),
        log_lines: Sequence[str] = ("hello from the job",),
        hold_log: bool = False,
        created_despite_error: bool = False,
        container_waiting_while_pending: bool = False,
    ) -> None:
        self.phases, self.post_errors = list(phases), list(post_errors)
        self.log_lines, self.hold_log = list(log_lines), hold_log
        self.created_despite_error = created_despite_error
        self.container_waiting_while_pending = container_waiting_while_pending
        self.requests: list[Request] = []
        self.jobs: dict[str, dict[str, Any]] = {}  # name → stored job (deleted ones removed)
        self.phases_served: list[str] = []
        self.lock = threading.Lock()
        self.running_served = threading.Event()  # a status GET answered phase Running
        self.log_opened = threading.Event()  # a pod log stream started
        self.deleted = threading.Event()
        self.stopping = threading.Event()
        self._posts = 0
        self._status_calls = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> K8sStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # ends held log streams
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def write_kubeconfig(self, path: Path, namespace: str = "sslops") -> Path:
        """A kubeconfig whose current context is this stand-in (plain http, no auth)."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {}}],
            "contexts": [
                {
                    "name": "standin",
                    "context": {"cluster": "standin", "user": "standin", "namespace": namespace},
                }
            ],
            "current-context": "standin",
        }
        path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
        return path

    # -- what was asked ----------------------------------------------------------------------

    def calls(self, method: str, pattern: re.Pattern[str] | None = None) -> list[Request]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.method == method and (pattern is None or pattern.match(r.path))
            ]

    # -- answers -----------------------------------------------------------------------------

    def _create(self, ns: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self._posts += 1
            n = self._posts
            name = body["metadata"]["name"]
            job = json.loads(json.dumps(body))
            job["metadata"].update(
                namespace=ns,
                uid=str(uuid.uuid4()),
                resourceVersion=str(1000 + n),
                creationTimestamp=_now(),
                generation=1,
            )
            if n <= len(self.post_errors):
                code = self.post_errors[n - 1]
                if self.created_despite_error:
                    self.jobs[name] = job
                return code, status_body(code, self._error_message(code, ns, name), name=name)
            if name in self.jobs:
                msg = f'jobs.batch.volcano.sh "{name}" already exists'
                return 409, status_body(409, msg, name=name, group="batch.volcano.sh", kind="jobs")
            self.jobs[name] = job
            return 201, job

    @staticmethod
    def _error_message(code: int, ns: str, name: str) -> str:
        if code == 403:
            return (
                'jobs.batch.volcano.sh is forbidden: User "system:serviceaccount:sslops:'
                'sslops-dagster" cannot create resource "jobs" in API group "batch.volcano.sh" '
                f'in the namespace "{ns}"'
            )
        if code == 429:
            return "too many requests, please try again later"
        return "the server is currently unable to handle the request"

    def _status(self, name: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            job = self.jobs.get(name)
            if job is None:
                msg = f'jobs.batch.volcano.sh "{name}" not found'
                return 404, status_body(404, msg, name=name, group="batch.volcano.sh", kind="jobs")
            phase = self.phases[min(self._status_calls, len(self.phases) - 1)]
            self._status_calls += 1
            self.phases_served.append(phase)
        if phase == "Running":
            self.running_served.set()
        tasks = {t["name"]: {"phase": {TASK_PHASE.get(phase, "Unknown"): 1}}
                 for t in job["spec"]["tasks"]}  # fmt: skip
        counts = {"pending": 0, "running": 0, "succeeded": 0, "failed": 0}
        key = {"Pending": "pending", "Running": "running", "Completed": "succeeded"}
        counts[key.get(phase, "failed")] = len(tasks)
        return 200, {
            **job,
            "status": {
                "state": {"phase": phase, "lastTransitionTime": _now()},
                "minAvailable": len(tasks),
                "taskStatusCount": tasks,
                **counts,
            },
        }

    def _delete(self, name: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            job = self.jobs.pop(name, None)
        if job is None:
            msg = f'jobs.batch.volcano.sh "{name}" not found'
            return 404, status_body(404, msg, name=name, group="batch.volcano.sh", kind="jobs")
        self.deleted.set()
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {"name": name, "group": "batch.volcano.sh", "kind": "jobs",
                                 "uid": job["metadata"]["uid"]}}  # fmt: skip

    def _pod_container(self, pod: str) -> str | None:
        """The container of a job's pod (Volcano names pods ``<job>-<task>-<index>``)."""
        with self.lock:
            for name, job in self.jobs.items():
                for t in job["spec"]["tasks"]:
                    if pod == f"{name}-{t['name']}-0":
                        return t["template"]["spec"]["containers"][0]["name"]
        return None

    def _container_waiting(self) -> bool:
        with self.lock:
            phase = self.phases_served[-1] if self.phases_served else self.phases[0]
        return self.container_waiting_while_pending and phase == "Pending"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection; a stream ends at close

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: requests are recorded instead

            def _serve(self) -> None:
                url = urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                query = parse_qs(url.query)
                with standin.lock:
                    standin.requests.append(Request(self.command, url.path, query, body))
                m, path = self.command, url.path
                if m == "POST" and (hit := JOBS.match(path)):
                    self._json(*standin._create(hit["ns"], body))
                elif m == "GET" and (hit := JOB_STATUS.match(path)):
                    self._json(*standin._status(hit["name"]))
                elif m == "DELETE" and (hit := JOB.match(path)):
                    self._json(*standin._delete(hit["name"]))
                elif m == "GET" and (hit := POD_LOG.match(path)):
                    self._log(hit["pod"], query)
                else:
                    self._json(404, status_body(404, "the server could not find the requested "
                                                f"resource ({m} {path})"))  # fmt: skip

            do_GET = do_POST = do_DELETE = _serve

            def _json(self, code: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _log(self, pod: str, query: dict[str, list[str]]) -> None:
                container = standin._pod_container(pod)
                if container is None:
                    msg = f'pods "{pod}" not found'
                    self._json(404, status_body(404, msg, name=pod, kind="pods"))
                    return
                if standin._container_waiting():  # what the API server says before the start
                    msg = (f'container "{container}" in pod "{pod}" is waiting to start: '
                           "ContainerCreating")  # fmt: skip
                    self._json(400, status_body(400, msg))
                    return
                stamps, follow = _flag(query, "timestamps"), _flag(query, "follow")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()  # no length: the body ends when the connection closes
                standin.log_opened.set()
                for line in standin.log_lines:
                    ts = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z ")
                    self.wfile.write(((ts if stamps else "") + line + "\n").encode())
                    self.wfile.flush()
                if follow and standin.hold_log:  # a running pod: the stream stays open
                    while not (standin.deleted.wait(0.05) or standin.stopping.is_set()):
                        pass

        return Handler
