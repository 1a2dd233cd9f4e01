"""Artifacts get the modes the umask asks for, not tempfile's 0600/0700."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from ssl_core import cli
from ssl_core.utils.atomic import atomic_dir, current_umask, write_json, write_text
from tests.conftest import write_folder_params


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
    return out


def _expect(root: Path, umask: int) -> None:
    modes = _modes(root)
    assert len(modes) > 1
    for name, mode in modes.items():
        want = (0o777 if (root / name).is_dir() else 0o666) & ~umask
        assert mode == want, f"{root / name}: {oct(mode)}, expected {oct(want)} (umask {umask:o})"


def test_umask_is_read_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_stage_outputs_follow_the_umask(tmp_path, digits_pool, monkeypatch, umask):
    proj = tmp_path / "proj"
    write_folder_params(proj, digits_pool)
    monkeypatch.chdir(proj)
    assert cli.main(["--quiet", "manifest"]) == 0
    _expect(proj / "data/manifest", umask)  # folder, parquet, csv, lineage.json
    assert cli.main(["--quiet", "manifest"]) == 0  # swapped over an existing folder
    _expect(proj / "data/manifest", umask)
    if umask == 0o022:
        assert _modes(proj / "data/manifest")["lineage.json"] == 0o644


def test_report_style_writes_follow_the_umask(tmp_path, umask):
    """What the report stage does: atomic files inside an atomic folder (and a k-means level
    cache file)."""
    from ssl_core.curation.hkmeans import _atomic_save

    with atomic_dir(tmp_path / "reports") as tmp:
        write_json(tmp / "metrics.json", {"knn": 1})
        write_text(tmp / "report.md", "# report\n")
        (tmp / "plots").mkdir()
        write_text(tmp / "plots" / "a.svg", "<svg/>")
    _expect(tmp_path / "reports", umask)
    (tmp_path / "cache").mkdir()
    _atomic_save(tmp_path / "cache" / "level0.npy", np.zeros(3))
    _expect(tmp_path / "cache", umask)
