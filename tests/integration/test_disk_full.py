"""A real full disk: a 2 MiB tmpfs as the data folder (needs root to mount; skipped otherwise).

The free-space check refuses on the real probe; with the probe patched to let the stage start,
the write fails with ENOSPC midway and the previous outputs stay byte-identical.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from ssl_core import cli
from ssl_core.utils import diskspace
from ssl_core.utils.diskspace import EXIT_NO_SPACE
from tests.conftest import write_folder_params


@pytest.fixture
def small_data(tmp_path) -> Path:
    """``tmp/proj/data``: a 2 MiB tmpfs."""
    data = tmp_path / "proj" / "data"
    data.mkdir(parents=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root (mount -t tmpfs); not root here")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(data)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {r.stderr.strip()}")
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _fill(folder: Path, leave: int) -> Path:
    """A file that leaves about ``leave`` bytes free on ``folder``'s filesystem."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_full_disk_is_refused_and_a_write_failing_midway_keeps_the_old_outputs(
    small_data, digits_pool, monkeypatch, capsys
):
    proj = small_data.parent
    write_folder_params(proj, digits_pool)
    monkeypatch.chdir(proj)

    # the real probe on the real 2 MiB filesystem: refused before any work
    assert cli.main(["--quiet", "manifest"]) == EXIT_NO_SPACE
    assert "has 2.0 MiB free" in capsys.readouterr().err
    assert not (small_data / "manifest").exists()

    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 10**12)  # let it start anyway
    assert cli.main(["--quiet", "manifest"]) == 0
    before = _snapshot(small_data / "manifest")
    assert "raw_manifest.parquet" in before

    # a bigger pool: the new manifest no longer fits in what is left
    extra = digits_pool / "b"
    extra.mkdir()
    for i, src in enumerate(sorted((digits_pool / "a").glob("0*.png")) * 10):
        shutil.copy(src, extra / f"copy_with_a_long_name_{i:04d}.png")
    filler = _fill(small_data, leave=12 * 1024)
    capsys.readouterr()

    assert cli.main(["--quiet", "manifest"]) == EXIT_NO_SPACE
    err = capsys.readouterr().err
    assert "the disk filled up while writing" in err and "previous outputs are unchanged" in err
    assert _snapshot(small_data / "manifest") == before  # byte-identical
    leftovers = [p.name for p in small_data.iterdir() if p.name.startswith(".manifest")]
    assert leftovers == []  # the temporary folder was removed

    filler.unlink()  # space again: the same command recovers
    assert cli.main(["--quiet", "manifest"]) == 0
    rows = pl.read_parquet(small_data / "manifest/raw_manifest.parquet").height
    assert rows == 64 + 600
