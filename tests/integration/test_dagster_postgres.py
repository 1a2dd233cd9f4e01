"""The production Dagster instance (``k8s/base/dagster/dagster.yaml``) on a real PostgreSQL 15.

A throwaway server (``initdb`` + ``pg_ctl``, password authentication over TCP on 127.0.0.1) gets
a database and a login role the way an operator would set them up; the ``DAGSTER_PG_*``
variables that the pods read from the Secret ``sslops-postgres`` are set to match; the file is
used as ``$DAGSTER_HOME/dagster.yaml`` unchanged except for the compute-log folder (the pods'
/app/data is the PVC). Then a real materialisation writes runs and events, a second instance
object reads them back, and psycopg2 sees the rows in Postgres.

Needs PostgreSQL 15's binaries (Debian: ``apt-get install -y postgresql``; ``make postgres-check``
does it as root). Without them the test is skipped, unless we are root, where it fails: the
make target should have installed them.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DAGSTER_YAML = REPO / "k8s" / "base" / "dagster" / "dagster.yaml"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
POD_COMPUTE_LOGS = "/app/data/.dagster/compute_logs"  # on the PVC in every Dagster pod


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    socket_dir: Path  # the superuser connects here (trust, local only)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as ``nobody``."""
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    if not (PG_BIN / "initdb").is_file():
        if os.geteuid() == 0:
            pytest.fail(f"PostgreSQL 15 missing ({PG_BIN}): run `make postgres-check`")
        pytest.skip(
            "PostgreSQL 15 missing: run 'sudo apt-get install -y postgresql' "
            "(or `make postgres-check` as root)"
        )
    # as root, the server runs as nobody: its folder must be reachable (not under a 0700 $TMPDIR)
    root = Path(tempfile.mkdtemp(prefix="sslops-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
    data, log = root / "data", root / "server.log"
    port = _free_port()
    _run(
        _as_server_user(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--no-locale",
             "-E", "UTF8", "--auth-local=trust", "--auth-host=scram-sha-256"]
        )
    )  # fmt: skip
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data)]
    opts = f"-h 127.0.0.1 -p {port} -k {root} -F"  # TCP for Dagster, a socket for the superuser
    try:
        _run(_as_server_user([*pg_ctl, "-l", str(log), "-w", "-t", "60", "-o", opts, "start"]))
        yield Postgres(host="127.0.0.1", port=port, socket_dir=root)
    finally:
        subprocess.run(
            _as_server_user([*pg_ctl, "-m", "fast", "-w", "-t", "60", "stop"]),
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def database(postgres: Postgres) -> dict[str, str]:
    """A database owned by a password-authenticated role, as the DAGSTER_PG_* Secret keys.

    The password has the characters that break naive connection URLs (@ / : %)."""
    import psycopg2

    env = {
        "DAGSTER_PG_USERNAME": "sslops_dagster",
        "DAGSTER_PG_PASSWORD": secrets.token_urlsafe(12) + "@/:%",
        "DAGSTER_PG_HOSTNAME": postgres.host,
        "DAGSTER_PG_DB_NAME": "sslops_dagster",
        "DAGSTER_PG_PORT": str(postgres.port),
    }
    conn = psycopg2.connect(
        host=str(postgres.socket_dir), port=postgres.port, user="postgres", dbname="postgres"
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE ROLE sslops_dagster LOGIN PASSWORD %s", (env["DAGSTER_PG_PASSWORD"],))
        cur.execute("CREATE DATABASE sslops_dagster OWNER sslops_dagster")
    conn.close()
    return env


@pytest.fixture
def dagster_home(database: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$DAGSTER_HOME with the production dagster.yaml; compute logs moved off /app/data."""
    text = DAGSTER_YAML.read_text()
    assert text.count(POD_COMPUTE_LOGS) == 1, "compute logs are no longer on the PVC path"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        text.replace(POD_COMPUTE_LOGS, str(tmp_path / "compute_logs"))
    )
    for key, value in database.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@dg.asset
def postgres_probe(context) -> dg.MaterializeResult:
    context.log.info("probe ran")
    return dg.MaterializeResult(metadata={"rows": 3})


def _pg_connect(env: dict[str, str], password: str | None = None):
    import psycopg2

    return psycopg2.connect(
        host=env["DAGSTER_PG_HOSTNAME"],
        port=int(env["DAGSTER_PG_PORT"]),
        user=env["DAGSTER_PG_USERNAME"],
        password=env["DAGSTER_PG_PASSWORD"] if password is None else password,
        dbname=env["DAGSTER_PG_DB_NAME"],
        connect_timeout=10,
    )


def test_production_instance_stores_runs_and_events_in_postgres(
    dagster_home: Path, database: dict[str, str], tmp_path: Path
) -> None:
    from dagster import DagsterInstance
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    production = yaml.safe_load(DAGSTER_YAML.read_text())

    t0 = time.perf_counter()
    with DagsterInstance.get() as instance:  # what the pods do: $DAGSTER_HOME/dagster.yaml
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert (
            coordinator.get_run_queue_config().max_concurrent_runs
            == production["run_coordinator"]["config"]["max_concurrent_runs"]
        )
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        assert isinstance(instance.compute_log_manager, LocalComputeLogManager)
        assert instance.telemetry_enabled is False
        assert instance.run_monitoring_enabled

        result = dg.materialize([postgres_probe], instance=instance)
        assert result.success
        run_id = result.run_id
    # the step's stdout/stderr went to the configured folder (the PVC in the pods)
    assert any(p.is_file() for p in (tmp_path / "compute_logs").rglob("*"))
    print(f"instance on Postgres + one materialisation: {time.perf_counter() - t0:.1f} s")

    # A second, independent instance object (another pod, in production) sees it all.
    with DagsterInstance.from_config(str(dagster_home)) as other:
        run = other.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        event = other.get_latest_materialization_event(dg.AssetKey("postgres_probe"))
        assert event is not None and event.run_id == run_id
        assert event.asset_materialization.metadata["rows"].value == 3
        types = {e.dagster_event.event_type for e in other.all_logs(run_id) if e.dagster_event}
        assert dg.DagsterEventType.RUN_SUCCESS in types
        assert dg.DagsterEventType.ASSET_MATERIALIZATION in types

    # And the rows are in PostgreSQL, reachable with the Secret's credentials only.
    with _pg_connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {row[0] for row in cur.fetchall()}
        assert {"runs", "event_logs", "asset_keys", "jobs", "instigators"} <= tables, tables
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,))
        assert cur.fetchone()[0] > 0
    conn.close()

    import psycopg2

    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _pg_connect(database, password="not-the-secret")


def test_missing_secret_key_fails_loudly(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Secret without DAGSTER_PG_PASSWORD: the instance refuses to load, naming the variable."""
    from dagster import DagsterInstance
    from dagster._core.errors import DagsterInvalidConfigError

    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    with pytest.raises(DagsterInvalidConfigError, match="DAGSTER_PG_PASSWORD"):
        DagsterInstance.get()
