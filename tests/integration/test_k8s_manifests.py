"""k8s/ checked offline: rendered by the real kubectl (kustomize), validated, cross-checked.

- ``kubectl kustomize`` renders the base and the example overlay (kubectl v1.33 from
  ``make k8s-tools``; the fixture runs the same script when it is missing).
- Every built-in object passes strict schema validation for Kubernetes 1.33
  (kubernetes-validate); the Volcano Queue (a CRD it has no schema for) is checked field by field.
- Security: every Dagster pod is non-root (uid/gid 10001), RuntimeDefault seccomp, read-only root
  filesystem, no privilege escalation, no capabilities, CPU and memory requests and limits,
  writable emptyDirs where it writes; only the code location mounts a service-account token.
- RBAC: one namespaced Role with exactly what TorchX's kubernetes scheduler calls, bound to the
  Dagster service account; nothing cluster-wide; no Secret and no password in k8s/.
- Names (namespace, queue, service account, PVC, mount path, image) agree with ``launch:`` in
  params.yaml, and the Dagster wiring agrees with itself (workspace → Service → container port;
  every DAGSTER_PG_* of dagster.yaml comes from the Secret).
- k8s/Dockerfile and .dockerignore, statically (there is no Docker daemon here).

Not covered: a real cluster (API-server admission, Volcano, the NVIDIA device plugin) and an
image build.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ssl_core.config import load_params
from ssl_core.launch.settings import LaunchConfig

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
INSTALL_KUBECTL = K8S / "tools" / "install_kubectl.sh"
K8S_VERSION = "1.33.0"
UID = 10001
OVERLAY_IMAGE = "registry.example.com/sslops:0.1.0"
PG_SECRET = "sslops-postgres"
VOLCANO_QUEUE_FIELDS = {
    "weight", "reclaimable", "capability", "deserved", "guarantee", "affinity", "parent",
    "extendClusters", "type",
}  # fmt: skip

# What torchx 0.7.0's kubernetes scheduler calls (create/get/list/delete Volcano jobs, get their
# status, read pods and their logs), plus watch on jobs for the launcher. Nothing else.
LEAST_PRIVILEGE = {
    ("batch.volcano.sh", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("batch.volcano.sh", "jobs/status"): {"get"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
}


# ---------------------------------------------------------------------------------------------
# rendering


@pytest.fixture(scope="module")
def kubectl() -> Path:
    if not KUBECTL.is_file():
        proc = subprocess.run(
            ["bash", str(INSTALL_KUBECTL), str(REPO)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if proc.returncode != 0 or not KUBECTL.is_file():
            pytest.fail(
                f"kubectl missing ({KUBECTL}) and installing it failed: run `make k8s-tools`\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
    return KUBECTL


def _render(kubectl: Path, path: Path) -> list[dict]:
    proc = subprocess.run(
        [str(kubectl), "kustomize", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def base(kubectl: Path) -> list[dict]:
    return _render(kubectl, K8S / "base")


@pytest.fixture(scope="module")
def overlay(kubectl: Path) -> list[dict]:
    return _render(kubectl, K8S / "overlays" / "example")


@pytest.fixture(scope="module")
def launch() -> LaunchConfig:
    return load_params(REPO / "params.yaml").launch


@pytest.fixture(params=["base", "overlay"])
def rendered(request: pytest.FixtureRequest) -> list[dict]:
    return request.getfixturevalue(request.param)


def _of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _is_volcano(doc: dict) -> bool:
    return doc["apiVersion"].split("/")[0].endswith(".volcano.sh")


def _containers(deployment: dict) -> list[dict]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


_UNITS = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
          "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}  # fmt: skip


def _quantity(value: str | int | float) -> float:
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert m and m.group(2) in _UNITS, f"not a Kubernetes quantity: {value!r}"
    return float(m.group(1)) * _UNITS[m.group(2)]


# ---------------------------------------------------------------------------------------------
# schema


def test_base_has_the_expected_objects(base: list[dict], overlay: list[dict]) -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in base}
    names = {(k, re.sub(r"-[a-z0-9]{10}$", "", n) if k == "ConfigMap" else n) for k, n in names}
    assert names == {
        ("Namespace", "sslops"),
        ("ServiceAccount", "sslops-dagster"),
        ("ServiceAccount", "sslops-job"),
        ("Role", "sslops-job-submitter"),
        ("RoleBinding", "sslops-job-submitter"),
        ("PersistentVolumeClaim", "sslops-data"),
        ("Queue", "sslops"),
        ("ConfigMap", "sslops-dagster-instance"),
        ("ConfigMap", "sslops-kubeconfig"),
        ("Deployment", "sslops-dagster-webserver"),
        ("Deployment", "sslops-dagster-daemon"),
        ("Deployment", "sslops-dagster-code-location"),
        ("Service", "sslops-dagster-webserver"),
        ("Service", "sslops-dagster-code-location"),
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in overlay} == {
        (d["kind"], d["metadata"]["name"]) for d in base
    }


def test_builtin_objects_pass_strict_schema_validation(rendered: list[dict]) -> None:
    failures = []
    builtin = [d for d in rendered if not _is_volcano(d)]
    assert len(builtin) == len(rendered) - 1  # all but the Queue
    for doc in builtin:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except Exception as e:  # SchemaNotFoundError too: a built-in kind must have a schema
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {e}")
    assert not failures, "\n".join(failures)


def test_strict_validation_is_not_vacuous(base: list[dict]) -> None:
    """The validator rejects an unknown field and a wrong type in our own Deployment."""
    deployment = _one(base, "Deployment", "sslops-dagster-webserver")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "one"
    for bad in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_volcano_queue(base: list[dict], overlay: list[dict], launch: LaunchConfig) -> None:
    for docs in (base, overlay):
        (queue,) = [d for d in docs if _is_volcano(d)]
        assert queue["apiVersion"] == "scheduling.volcano.sh/v1beta1"
        assert queue["kind"] == "Queue"
        assert queue["metadata"]["name"] == launch.queue
        assert "namespace" not in queue["metadata"], "Queue is cluster-scoped"
        spec = queue["spec"]
        assert set(spec) <= VOLCANO_QUEUE_FIELDS, set(spec) - VOLCANO_QUEUE_FIELDS
        assert spec["weight"] == 1 and spec["reclaimable"] is True
        for value in spec.get("capability", {}).values():
            assert _quantity(value) > 0
    overlay_queue = next(d for d in overlay if _is_volcano(d))
    assert overlay_queue["spec"]["capability"]["nvidia.com/gpu"] > 0


# ---------------------------------------------------------------------------------------------
# security


def test_every_pod_is_locked_down(rendered: list[dict]) -> None:
    deployments = _of_kind(rendered, "Deployment")
    assert len(deployments) == 3
    for dep in deployments:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == UID, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert not any("hostPath" in v for v in volumes.values()), name
        for c in _containers(dep):
            where = f"{name}/{c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert not sc.get("privileged"), where
            for key in ("runAsUser", "runAsGroup"):
                assert sc.get(key, UID) == UID, where
            res = c["resources"]
            for kind in ("cpu", "memory"):
                req, lim = _quantity(res["requests"][kind]), _quantity(res["limits"][kind])
                assert 0 < req <= lim, f"{where}: {kind} request {req} > limit {lim}"
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert {m["name"] for m in mounts.values()} <= set(volumes), where
            # read-only root: every place it writes is a volume
            env = _env(c)
            assert env["HOME"]["value"] == "/tmp" and env["MPLCONFIGDIR"]["value"] == "/tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], where
            home = env["DAGSTER_HOME"]["value"]
            assert "emptyDir" in volumes[mounts[home]["name"]], where
            instance = mounts[f"{home}/dagster.yaml"]
            assert instance["subPath"] == "dagster.yaml" and instance["readOnly"] is True
            assert volumes[instance["name"]]["configMap"]["name"].startswith(
                "sslops-dagster-instance-"
            )
        assert {m["name"] for c in _containers(dep) for m in c["volumeMounts"]} == set(volumes)


def test_labels(rendered: list[dict]) -> None:
    for doc in rendered:
        labels = doc["metadata"].get("labels", {})
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        assert labels.get("app.kubernetes.io/part-of") == "sslops", what
        assert labels.get("app.kubernetes.io/name") and labels.get("app.kubernetes.io/component")
    for dep in _of_kind(rendered, "Deployment"):
        template = dep["spec"]["template"]["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/part-of"):
            assert template[key] == dep["metadata"]["labels"][key]
        assert template["app.kubernetes.io/component"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= template.items()
    for svc in _of_kind(rendered, "Service"):
        (dep,) = [
            d
            for d in _of_kind(rendered, "Deployment")
            if svc["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        ports = {p["name"]: p["containerPort"] for c in _containers(dep) for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{svc['metadata']['name']}: {port}"


def test_namespace_enforces_restricted_pod_security(base: list[dict]) -> None:
    labels = _one(base, "Namespace", "sslops")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_service_accounts_and_tokens(rendered: list[dict], launch: LaunchConfig) -> None:
    accounts = {d["metadata"]["name"]: d for d in _of_kind(rendered, "ServiceAccount")}
    assert set(accounts) == {"sslops-dagster", launch.service_account}
    for sa in accounts.values():  # opt-in per pod; job pods never get one
        assert sa["automountServiceAccountToken"] is False
    automount = {}
    for dep in _of_kind(rendered, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "sslops-dagster"
        automount[dep["metadata"]["name"]] = pod["automountServiceAccountToken"]
    assert automount == {
        "sslops-dagster-code-location": True,  # submits the Volcano jobs
        "sslops-dagster-webserver": False,
        "sslops-dagster-daemon": False,
    }


def test_rbac_is_namespaced_and_least_privilege(rendered: list[dict], launch: LaunchConfig) -> None:
    kinds = {d["kind"] for d in rendered}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    (role,) = _of_kind(rendered, "Role")
    assert role["metadata"]["namespace"] == launch.namespace
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames/URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert "*" not in {v for verbs in granted.values() for v in verbs}
    assert granted == LEAST_PRIVILEGE
    (binding,) = _of_kind(rendered, "RoleBinding")
    assert binding["metadata"]["namespace"] == launch.namespace
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sslops-dagster", "namespace": launch.namespace}
    ]  # the job service account is bound to nothing


# `password: x`, `DAGSTER_PG_PASSWORD=x`, `token: x`; not when x is empty, `{env: X}`, `$VAR`,
# `<placeholder>` or a path
_PASSWORD_LITERAL = re.compile(
    r"""(?ix) (?<![a-z]) (pass(word|wd)?|pwd|secret|token) ["']?\s*[:=]\s*
        (?! \s*$ | \s*\{\s*env\s*: | \s*["']?\$ | \s*["']?< | \s*/ )
        \S"""
)


def _password_literals(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if _PASSWORD_LITERAL.search(line)]


def test_no_secrets_in_k8s(rendered: list[dict]) -> None:
    assert not _of_kind(rendered, "Secret")
    # the detector itself
    assert len(_password_literals("password: hunter2\nDAGSTER_PG_PASSWORD=s3cr3t\ntoken: 'a'")) == 3
    assert not _password_literals(
        'password: {env: DAGSTER_PG_PASSWORD}\n--from-literal=DAGSTER_PG_PASSWORD="$PW"\n'
        "tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n"
        "- name: DAGSTER_PG_PASSWORD\nkey: DAGSTER_PG_PASSWORD\nautomountServiceAccountToken: true"
    )
    found = {}
    for path in sorted(K8S.rglob("*")):
        if not path.is_file() or path.suffix not in {"", ".yaml", ".yml", ".md", ".sh"}:
            continue
        if hits := _password_literals(path.read_text()):
            found[str(path.relative_to(REPO))] = hits
    assert not found, found
    # every pod takes the database credentials from the operator's Secret, by reference
    for dep in _of_kind(rendered, "Deployment"):
        for c in _containers(dep):
            for e in c.get("env", []):
                assert "value" not in e or not re.search(r"(?i)pass|secret|token", e["name"])


# ---------------------------------------------------------------------------------------------
# names and wiring


def test_names_agree_with_params(base: list[dict], launch: LaunchConfig) -> None:
    assert _one(base, "Namespace", launch.namespace)
    for doc in base:
        if doc["kind"] not in {"Namespace", "Queue"}:
            assert doc["metadata"]["namespace"] == launch.namespace, doc["metadata"]["name"]
    assert _one(base, "Queue", launch.queue)
    assert _one(base, "ServiceAccount", launch.service_account)
    pvc = _one(base, "PersistentVolumeClaim", launch.data_volume)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storageClassName" not in pvc["spec"]  # the overlay's choice
    data_mount = f"{launch.workdir}/data"
    for dep in _of_kind(base, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert list(claims.values()) == [launch.data_volume]
        for c in _containers(dep):
            assert c["image"] == launch.image
            assert c["workingDir"] == launch.workdir
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            (volume,) = claims
            assert mounts[volume] == data_mount, dep["metadata"]["name"]


def _container(docs: list[dict], deployment: str) -> dict:
    (c,) = _one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return c


def _configmap(docs: list[dict], prefix: str) -> dict:
    (cm,) = [
        d
        for d in _of_kind(docs, "ConfigMap")
        if re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", d["metadata"]["name"])
    ]
    return cm


def test_dagster_wiring(base: list[dict], launch: LaunchConfig) -> None:
    instance_cm = _configmap(base, "sslops-dagster-instance")
    assert set(instance_cm["data"]) == {"dagster.yaml", "workspace.yaml"}
    instance = yaml.safe_load(instance_cm["data"]["dagster.yaml"])
    assert instance_cm["data"]["dagster.yaml"] == (K8S / "base/dagster/dagster.yaml").read_text()

    # workspace → code location Service → container port → `dagster api grpc --port`
    (server,) = yaml.safe_load(instance_cm["data"]["workspace.yaml"])["load_from"]
    grpc = server["grpc_server"]
    svc = _one(base, "Service", grpc["host"])
    (port,) = svc["spec"]["ports"]
    assert port["port"] == grpc["port"]
    code = _container(base, "sslops-dagster-code-location")
    assert {p["name"]: p["containerPort"] for p in code["ports"]}[port["targetPort"]] == 4000
    assert code["command"] == [
        "dagster", "api", "grpc", "--module-name", "orchestration.definitions",
        "--host", "0.0.0.0", "--port", str(grpc["port"]),
    ]  # fmt: skip
    env = _env(code)
    assert env["SSLOPS_RUNNER_MODE"]["value"] == "cli"
    assert env["SSLOPS_PROJECT_DIR"]["value"] == launch.workdir

    web = _container(base, "sslops-dagster-webserver")
    daemon = _container(base, "sslops-dagster-daemon")
    workspace = "/opt/dagster/workspace.yaml"
    assert web["command"] == ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", workspace]
    assert daemon["command"] == ["dagster-daemon", "run", "-w", workspace]
    for c in (web, daemon):
        (m,) = [m for m in c["volumeMounts"] if m["mountPath"] == workspace]
        assert m["subPath"] == "workspace.yaml"

    # the instance: PostgreSQL from DAGSTER_PG_* (all from the Secret), logs on the PVC
    pg = instance["storage"]["postgres"]["postgres_db"]
    env_refs = {v["env"] for v in pg.values() if isinstance(v, dict)}
    assert env_refs == {
        "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOSTNAME",
        "DAGSTER_PG_DB_NAME", "DAGSTER_PG_PORT",
    }  # fmt: skip
    for c in (code, web, daemon):
        env = _env(c)
        for var in env_refs:
            assert env[var]["valueFrom"]["secretKeyRef"] == {"name": PG_SECRET, "key": var}
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["run_coordinator"]["config"]["max_concurrent_runs"] >= 1
    assert instance["compute_logs"]["class"] == "LocalComputeLogManager"
    assert instance["compute_logs"]["config"]["base_dir"].startswith(f"{launch.workdir}/data/")
    assert instance["telemetry"] == {"enabled": False}


def test_code_location_kubeconfig_is_the_pods_own_identity(
    base: list[dict], launch: LaunchConfig, tmp_path: Path
) -> None:
    """TorchX 0.7 only reads a kubeconfig: the one mounted in the code location must load with
    the kubernetes client and resolve to the API server, the pod's CA and its token."""
    from kubernetes import client
    from kubernetes.config.kube_config import KubeConfigLoader

    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"  # where the kubelet mounts them
    code = _container(base, "sslops-dagster-code-location")
    kube_cm = _configmap(base, "sslops-kubeconfig")
    pod = _one(base, "Deployment", "sslops-dagster-code-location")["spec"]["template"]["spec"]
    cm_name = kube_cm["metadata"]["name"]
    (volume,) = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == cm_name]
    (mount,) = [m for m in code["volumeMounts"] if m["name"] == volume["name"]]
    (key,) = kube_cm["data"]
    assert _env(code)["KUBECONFIG"]["value"] == f"{mount['mountPath']}/{key}"

    text = kube_cm["data"][key]
    assert text.count(sa_dir) == 2
    (tmp_path / "token").write_text("pod-token")
    (tmp_path / "ca.crt").write_text("pod-ca")
    kubeconfig = yaml.safe_load(text.replace(sa_dir, str(tmp_path)))
    configuration = client.Configuration()
    KubeConfigLoader(config_dict=kubeconfig).load_and_set(configuration)
    assert configuration.host == "https://kubernetes.default.svc"
    assert configuration.api_key["BearerToken"] == "Bearer pod-token"
    assert configuration.ssl_ca_cert == str(tmp_path / "ca.crt")
    assert kubeconfig["contexts"][0]["context"]["namespace"] == launch.namespace


# ---------------------------------------------------------------------------------------------
# overlay, Dockerfile, .dockerignore


def test_overlay_sets_image_and_storage(
    base: list[dict], overlay: list[dict], launch: LaunchConfig
) -> None:
    images = {c["image"] for d in _of_kind(overlay, "Deployment") for c in _containers(d)}
    assert images == {OVERLAY_IMAGE} and launch.image != OVERLAY_IMAGE
    pvc = _one(overlay, "PersistentVolumeClaim", launch.data_volume)
    assert pvc["spec"]["storageClassName"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    base_code = _container(base, "sslops-dagster-code-location")["resources"]
    ov_code = _container(overlay, "sslops-dagster-code-location")["resources"]
    assert ov_code != base_code
    assert _one(overlay, "Deployment", "sslops-dagster-code-location")["spec"]["replicas"] == 1
    assert _one(overlay, "Deployment", "sslops-dagster-daemon")["spec"]["replicas"] == 1


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of k8s/Dockerfile, continuation lines joined, comments dropped."""
    lines = (K8S / "Dockerfile").read_text().splitlines()
    lines = [line for line in lines if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_dockerfile(launch: LaunchConfig) -> None:
    instructions = _dockerfile_instructions()
    final = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    stage = instructions[final:]
    args = lambda word: [a for w, a in stage if w == word]  # noqa: E731

    for _, image in (i for i in instructions if i[0] == "FROM"):
        ref = image.split()[0]
        if not ref.startswith("$"):
            assert re.search(r":[\w.-]+$", ref) and not ref.endswith(":latest"), ref
    global_args = " ".join(a for w, a in instructions[:final] if w == "ARG")
    assert re.search(r"CUDA_IMAGE=nvidia/cuda:12\.\d+\.\d+-", global_args)

    users = args("USER")
    assert users and re.fullmatch(rf"{UID}(:{UID})?", users[-1]), users
    assert args("WORKDIR")[-1] == launch.workdir
    runs = " ".join(args("RUN"))
    assert "torch==${TORCH_VERSION}" in runs and "TORCH_VERSION=2.13.0" in " ".join(args("ARG"))
    assert "download.pytorch.org/whl/cu128" in " ".join(args("ARG"))
    assert "--extra gpu" in runs and "--extra orchestration" in runs
    assert re.search(r"-e \"?\.\[gpu,orchestration\]", runs)  # the code imported is /app's
    assert "/opt/dvc/bin/python" in runs and '"dvc==3.67.1"' in runs
    env = " ".join(args("ENV"))
    assert "SSLOPS_DVC=/opt/dvc/bin/dvc" in env
    assert "SSLOPS_GIT_SHA=$GIT_SHA" in env
    git_arg = next(i for i, (w, a) in enumerate(stage) if w == "ARG" and a.startswith("GIT_SHA"))
    git_env = next(i for i, (w, a) in enumerate(stage) if w == "ENV" and "SSLOPS_GIT_SHA" in a)
    assert git_arg < git_env
    assert f"useradd --uid {UID} --gid {UID}" in runs
    for word, a in instructions:
        if word in {"ARG", "ENV"}:
            assert not re.search(r"(?i)(password|secret|token)\w*=", a), a


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or one of its parents wins."""
    ignored = False
    parts = path.split("/")
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        forms = {pattern.replace("**", "*"), pattern.replace("**/", "")}  # ** = any dirs, or none
        if any(fnmatch.fnmatchcase(c, f) for c in candidates for f in forms):
            ignored = not negate
    return ignored


def test_dockerignore() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    kept = (
        "data/README.md", "data/labels/README.md", "params.yaml", "pyproject.toml", "dvc.yaml",
        "ssl_core/cli.py", "orchestration/definitions.py", "k8s/Dockerfile",
    )  # fmt: skip
    dropped = (
        ".venv/bin/python", ".venv-dvc/bin/dvc", ".git/HEAD", ".tools/bin/kubectl",
        "data/manifest/manifest.parquet", "data/demo/pool/a.png", "data/.jobs/x/log",
        "ssl_core/__pycache__/cli.cpython-311.pyc", "sslops.egg-info/PKG-INFO",
        ".dagster_home/dagster.yaml", ".pytest_cache/v", ".ruff_cache/x",
    )  # fmt: skip
    assert not [p for p in kept if _docker_ignored(p, patterns)]
    assert not [p for p in dropped if not _docker_ignored(p, patterns)]


# ---------------------------------------------------------------------------------------------
# the distributed clusters job (launch.clusters with more than one rank), up to the API server


def test_two_node_clusters_job_renders_and_validates(launch: LaunchConfig) -> None:
    """What ``sslops job-spec clusters`` submits for 2 nodes x 2 CPU ranks: torchrun with c10d
    rendezvous on rank 0, the clusters job entry, no GPU, the data volume; pods strictly valid."""
    from ssl_core.launch.settings import JobResources
    from ssl_core.launch.stage_job import render_stage_job

    params = load_params(REPO / "params.yaml")
    res = JobResources(nnodes=2, nproc_per_node=2, cpu=16, memory_gb=64, gpus=0)
    update = {"scheduler": "kubernetes", "clusters": res}
    params = params.model_copy(update={"launch": launch.model_copy(update=update)})
    text = render_stage_job(params, "clusters")
    job = yaml.safe_load(text.split("\n", 1)[1])
    assert job["kind"] == "Job" and job["spec"]["queue"] == launch.queue
    tasks = job["spec"]["tasks"]
    assert [t["name"] for t in tasks] == ["clusters-0", "clusters-1"]
    for t in tasks:
        pod = t["template"]
        (c,) = pod["spec"]["containers"]
        cmd = c["command"][2]
        assert "--nproc_per_node 2 --nnodes 2 --rdzv_backend c10d" in cmd
        assert "-m ssl_core.launch.job clusters --params" in cmd
        assert "nvidia.com/gpu" not in c["resources"]["limits"] or (
            c["resources"]["limits"]["nvidia.com/gpu"] == "0"
        )
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]  # fmt: skip
        assert claims == [launch.data_volume]
        template = {"apiVersion": "v1", "kind": "PodTemplate",
                    "metadata": {"name": "t", "labels": pod["metadata"]["labels"]},
                    "template": pod}  # fmt: skip
        kubernetes_validate.validate(template, K8S_VERSION, strict=True)
