"""The Dagster UI as a person sees it: the real ``dagster-webserver`` on an instance where every
asset of ``orchestration.definitions`` is materialised and every asset check evaluated (one
check failed), opened in headless Chromium.

The instance is seeded with runless events (no pipeline run: that would take far too long),
in a temporary ``DAGSTER_HOME``. The asset catalog (``/assets``) must list every asset as
materialised, with the failed check's asset marked failed (red ``check_failed`` status icon)
and the others passed; the failed check's own page must say "Failed". The webserver's GraphQL
endpoint cross-checks the latest materialisation of every asset and the latest evaluation of
every check. A screenshot of the catalog goes to ``tmp_path``, and also into
``$SSLOPS_UI_SCREENSHOT_DIR`` when that is set.

Needs Debian's ``chromium`` (``make data-check`` installs it as root); skipped without it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestration.graph import BY_NAME
from tests.integration import dagster_ui as ui

pytestmark = pytest.mark.skipif(
    ui.CHROMIUM is None,
    reason="no chromium binary on PATH (apt-get install -y chromium, or `make data-check` as root)",
)

SCREENSHOT_DIR_ENV = "SSLOPS_UI_SCREENSHOT_DIR"
WIDTH, HEIGHT = 1600, 1000

LATEST = """{ assetNodes { assetKey { path }
  assetMaterializations(limit: 1) { timestamp }
  assetChecksOrError { ... on AssetChecks { checks { name
    executionForLatestMaterialization { status evaluation { success } } } } } } }"""


@dataclass(frozen=True)
class Seeded:
    keys: ui.GraphKeys
    failed: tuple[str, str]  # (asset, check) whose evaluation failed
    url: str
    work: Path


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    work = tmp_path_factory.mktemp("dagster_ui")
    keys = ui.graph_keys()
    assert keys.assets and keys.checks, keys
    failed = keys.checks[0]
    ui.seed_instance(work / "dagster_home", keys, {failed})
    with ui.webserver(work / "dagster_home", work / "webserver.log") as server:
        yield Seeded(keys, failed, server.url, work)


def _catalog_ready(keys: ui.GraphKeys):
    def ready(dom: str) -> bool:
        rows = ui.catalog_rows(dom, keys.assets)
        return len(rows) == len(keys.assets) and all(
            r.materialized and r.status_icon for r in rows.values()
        )

    return ready


def test_catalog_lists_every_asset_materialised_with_check_status(seeded: Seeded) -> None:
    keys = seeded.keys
    dom, _ = ui.dump_dom(f"{seeded.url}/assets", seeded.work / "chromium", _catalog_ready(keys))
    rows = ui.catalog_rows(dom, keys.assets)
    missing = sorted(set(keys.assets) - set(rows))
    assert not missing, f"assets not in the catalog's DOM: {missing}\n{dom[-3000:]}"

    failed_asset = seeded.failed[0]
    for asset, row in rows.items():
        assert row.materialized, row
        want = "check_failed" if asset == failed_asset else "check_passed"
        assert row.status_icon == want, row

    # the same latest materialisations the webserver's GraphQL API reports
    data = ui.graphql(seeded.url, LATEST)
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert sorted(nodes) == sorted(keys.assets)
    for asset, node in nodes.items():
        (latest,) = node["assetMaterializations"]
        if BY_NAME[asset].partitioned:  # its status cell links to the partitions, not a time
            assert rows[asset].events_time_ms is None, asset
            continue
        assert rows[asset].events_time_ms == int(float(latest["timestamp"])), asset

    # and the latest evaluation of every check, exactly one failed
    status = {
        (asset, c["name"]): c["executionForLatestMaterialization"]
        for asset, node in nodes.items()
        for c in node["assetChecksOrError"]["checks"]
    }
    assert sorted(status) == sorted(keys.checks)
    for check, execution in status.items():
        assert execution is not None, f"no evaluation of {check}"
        bad = check == seeded.failed
        assert execution["status"] == ("FAILED" if bad else "SUCCEEDED"), (check, execution)
        assert execution["evaluation"]["success"] is (not bad), (check, execution)


def test_failed_check_page_says_failed(seeded: Seeded) -> None:
    asset, check = seeded.failed
    passing_asset, passing = next(c for c in seeded.keys.checks if c[0] != asset)
    for a, c, word in ((asset, check, "Failed"), (passing_asset, passing, "Succeeded")):
        dom, _ = ui.dump_dom(
            f"{seeded.url}/assets/{a}?view=checks",
            seeded.work / f"chromium-{a}",
            lambda d, c=c: f">{c}<" in d and "Evaluation result" in d,
        )
        assert f">{c}<" in dom, f"check {c} not on /assets/{a}?view=checks\n{dom[-3000:]}"
        # the checks list: "<check name> … <span …>Failed</span>"
        row = dom[dom.index(f"<span>{c}</span>") :]
        assert f">{word}</span>" in row[:1500], row[:1500]


def test_screenshot_of_the_catalog(seeded: Seeded, tmp_path: Path) -> None:
    shot = tmp_path / "dagster_ui.png"
    for attempt in range(1, 3):
        r = ui.chromium(
            seeded.work / f"chromium-shot-{attempt}",
            f"--virtual-time-budget={15_000 * attempt}",
            f"--window-size={WIDTH},{HEIGHT}",
            f"--screenshot={shot}",
            f"{seeded.url}/assets",
        )
        if r.returncode == 0 and shot.is_file() and shot.stat().st_size > 0:
            break
    assert shot.is_file() and shot.stat().st_size > 0, r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as im:
        assert im.size == (WIDTH, HEIGHT)
        px = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    assert (px != px[0]).any()  # not a blank page
    if out := os.environ.get(SCREENSHOT_DIR_ENV):
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(out) / shot.name)
