"""Helpers for ``test_dagster_ui.py``: a seeded Dagster instance, the real webserver on it,
headless Chromium pointed at it, and the webserver's GraphQL endpoint.

The instance is "materialised" cheaply: one runless materialisation per asset of
``orchestration.definitions`` and one evaluation per asset check (the pipeline itself is
never run). ``dagster-webserver`` is started in its own session (process group; see
docs in /work/shared/DESIGN.md on ``dg dev``) and stopped by killing that group.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = next((b for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
_SIBLING = Path(sys.executable).with_name("dagster-webserver")  # the venv's own entry point
WEBSERVER = str(_SIBLING) if _SIBLING.is_file() else shutil.which("dagster-webserver")


@dataclass(frozen=True)
class GraphKeys:
    assets: tuple[str, ...]  # user strings, e.g. "manifest"
    checks: tuple[tuple[str, str], ...]  # (asset, check name)


def graph_keys() -> GraphKeys:
    """Every asset key and asset check of the real definitions (loads the code location)."""
    from orchestration.definitions import defs

    graph = defs().get_repository_def().asset_graph
    assets = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    checks = sorted((k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys)
    return GraphKeys(tuple(assets), tuple(checks))


def seed_instance(home: Path, keys: GraphKeys, failed: set[tuple[str, str]]) -> None:
    """Record a materialisation per asset and an evaluation per check in ``home``'s instance
    (the same sqlite storage ``DAGSTER_HOME=home`` gives the webserver). Checks in ``failed``
    fail; the others pass."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    # "seen" the first-visit "Join the Dagster community" modal (dagster._core.nux), which
    # the UI otherwise pops over every page served from 127.0.0.1
    (home / ".nux").mkdir(exist_ok=True)
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n", encoding="utf-8")
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        for asset in keys.assets:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=dg.AssetKey.from_user_string(asset),
                    description="seeded by tests/integration/test_dagster_ui.py",
                    metadata={"seeded": True},
                )
            )
        for asset, check in keys.checks:
            bad = (asset, check) in failed
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey.from_user_string(asset),
                    check_name=check,
                    passed=not bad,
                    metadata={"failed_expectations": 1 if bad else 0},
                )
            )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Webserver:
    url: str
    proc: subprocess.Popen
    log: Path


@contextmanager
def webserver(home: Path, log: Path, timeout_s: float = 150.0) -> Iterator[Webserver]:
    """``dagster-webserver -m orchestration.definitions`` on a free port, in its own process
    group, with ``DAGSTER_HOME=home``; yields once ``/server_info`` answers and the code
    location has loaded; kills the whole group (code server included) on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1"}
    assert WEBSERVER, "dagster-webserver not installed (pyproject's orchestration extra)"
    cmd = [WEBSERVER, "-h", "127.0.0.1", "-p", str(port), "-m", "orchestration.definitions"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Webserver(url, proc, log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster-webserver exited {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"dagster-webserver not up after {timeout_s}s:\n{_tail(log)}")
            if _answers(f"{url}/server_info") and _location_loaded(url):
                break
            time.sleep(1.0)
        yield server
    finally:
        _kill_group(proc)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _location_loaded(url: str) -> bool:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"
    try:
        data = graphql(url, query)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    entries = (data.get("workspaceOrError") or {}).get("locationEntries") or []
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the webserver's process group, then SIGKILL whatever is left of it (its gRPC
    code server included)."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        payload = json.loads(r.read())
    if payload.get("errors"):
        raise ValueError(payload["errors"])
    return payload["data"]


def chromium(profile: Path, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile (we may run as root: no sandbox)."""
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)


def dump_dom(
    url: str, profiles: Path, ready: Callable[[str], bool], attempts: int = 3
) -> tuple[str, int]:
    """The DOM of ``url`` after the React app has rendered: Chromium's ``--dump-dom`` under a
    virtual-time budget, retried (longer budget, fresh profile) until ``ready(dom)``.
    Returns the last DOM and the attempts used."""
    dom = ""
    for attempt in range(1, attempts + 1):
        budget = 15_000 * attempt
        try:
            r = chromium(
                profiles / f"dom-{attempt}",
                f"--virtual-time-budget={budget}",
                "--window-size=1600,3000",  # tall: the virtualised tables render every row
                "--dump-dom",
                url,
            )
            dom = r.stdout
        except subprocess.TimeoutExpired:
            continue
        if ready(dom):
            return dom, attempt
    return dom, attempts


@dataclass(frozen=True)
class CatalogRow:
    asset: str
    status_icon: str | None  # the status cell's icon: "check_passed" / "check_failed"
    materialized: bool  # the status cell says "Materialized"
    events_time_ms: int | None  # the latest materialisation's timestamp its link points at


def catalog_rows(dom: str, assets: Iterable[str]) -> dict[str, CatalogRow]:
    """The asset catalog's rows (``/assets``): a row runs from its asset's link
    (``href="/assets/<key>"``) to its status cell's link to the latest event
    (``href="/assets/<key>?view=events&time=<ms>"``). Missing assets are left out."""
    html = unescape(dom)
    rows = {}
    for asset in assets:
        start = html.find(f'href="/assets/{asset}"')
        if start < 0:
            continue
        ev = re.compile(rf'href="/assets/{re.escape(asset)}\?view=events&time=(\d+)"')
        m = ev.search(html, start)
        cell = html[start : m.start()] if m else html[start : start + 20_000]
        icons = re.findall(r'aria-label="(check_passed|check_failed)"', cell)
        rows[asset] = CatalogRow(
            asset,
            icons[-1] if icons else None,
            ">Materialized<" in cell,
            int(m.group(1)) if m else None,
        )
    return rows
