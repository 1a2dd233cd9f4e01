"""Pools nobody looked at: odd names, symlinks, unreadable, hidden and empty files, special
files, and parquet pools with bad rows. Each is listed and quarantined with a reason, or
refused with a clear error; nothing crashes mid-run and nothing outside the pool is read."""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from ssl_core.config import IngestConfig
from ssl_core.data.dataset import ImageDataset
from ssl_core.data.manifest import build_manifest

CFG = IngestConfig()


def png(value: int = 100) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def reasons(pool: Path) -> dict[str, str | None]:
    return dict(build_manifest(pool, CFG, progress=False).select("path", "reason").iter_rows())


def test_names_with_any_characters(tmp_path):
    names = ["with space.png", "ünï cødé 画像.png", "new\nline.png", "tab\tand'quote\".png"]
    for i, n in enumerate(names):
        (tmp_path / n).write_bytes(png(10 * i))
    os.close(os.open(os.fsencode(tmp_path) + b"/latin1-\xe9.png", os.O_CREAT | os.O_WRONLY))
    got = reasons(tmp_path)
    assert {n: got[n] for n in names} == dict.fromkeys(names)
    assert got["latin1-\\xe9.png"] == "name_not_utf8"  # shown escaped, never opened later
    ds = ImageDataset(tmp_path, names, size=8)
    assert all(ds[i] is not None for i in range(len(names)))  # read back by the same text


def test_symlinks_never_followed_out_of_the_pool(tmp_path):
    pool, outside = tmp_path / "pool", tmp_path / "secret"
    (pool / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "private.png").write_bytes(png(1))
    (outside / "more.png").write_bytes(png(2))
    (pool / "real.png").write_bytes(png(3))
    (pool / "alias.png").symlink_to(pool / "real.png")  # inside: another name, read
    (pool / "sub" / "up.png").symlink_to("../real.png")  # relative, inside
    (pool / "escape.png").symlink_to(outside / "private.png")
    (pool / "sneaky.png").symlink_to("sub/../../secret/private.png")
    (pool / "linked_dir").symlink_to(outside, target_is_directory=True)
    (pool / "loop_dir").symlink_to(pool, target_is_directory=True)
    (pool / "gone.png").symlink_to(pool / "deleted.png")
    df = build_manifest(pool, CFG, progress=False)
    got = dict(df.select("path", "reason").iter_rows())
    assert got == {
        "alias.png": None,
        "escape.png": "symlink_outside_pool",
        "gone.png": "dangling_symlink",
        "linked_dir": "symlink_outside_pool",  # not descended: more.png is never listed
        "loop_dir": "not_a_regular_file",
        "real.png": None,
        "sneaky.png": "symlink_outside_pool",
        "sub/up.png": None,
    }
    sha = dict(df.select("path", "sha256").iter_rows())
    assert sha["alias.png"] == sha["real.png"] == sha["sub/up.png"]  # dedup sees one image
    assert sha["escape.png"] is None  # the outside file was never read


def test_hidden_empty_and_special_files(tmp_path):
    (tmp_path / ".hidden.png").write_bytes(png())
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.png").write_bytes(png())
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "dir.png").mkdir()  # a folder named like an image: walked, not read
    os.mkfifo(tmp_path / "fifo.png")  # opening it would block forever
    (tmp_path / "ok.png").write_bytes(png())
    assert reasons(tmp_path) == {"empty.png": "empty_file", "ok.png": None}


@contextlib.contextmanager
def as_nobody():
    """Run the body with the effective uid of ``nobody`` (root ignores file modes)."""
    if os.geteuid() != 0:
        yield
        return
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and no 'nobody' user to drop privileges to")
    os.setegid(nobody.pw_gid)
    os.seteuid(nobody.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unreadable_file_is_quarantined_not_a_crash():
    # a folder every user can enter (pytest's tmp_path is private to root)
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        pool = Path(d)
        pool.chmod(0o755)
        (pool / "ok.png").write_bytes(png())
        (pool / "locked.png").write_bytes(png())
        (pool / "locked.png").chmod(0o000)
        (pool / "ok.png").chmod(0o644)
        with as_nobody():
            got = reasons(pool)
            sample = ImageDataset(pool, ["locked.png"], size=8)[0]
        assert got == {"locked.png": "unreadable: Permission denied", "ok.png": None}
        assert sample is None  # the dataset skips it (counted as bad), no crash


def test_parquet_pool_with_bad_rows(tmp_path):
    rows = [png(1), None, b"GIF89a not really", b"", png(2)]
    pool = tmp_path / "pool.parquet"
    pl.DataFrame({"image": rows}, schema={"image": pl.Binary}).write_parquet(pool)
    got = build_manifest(pool, CFG, progress=False)
    assert got["reason"].to_list() == [None, "null_image", "corrupt_header", "empty_file", None]
    ds = ImageDataset(pool, got["path"].to_list(), size=8)
    assert [ds[i] is None for i in range(5)] == [False, True, True, True, False]


@pytest.mark.parametrize(
    ("df", "match"),
    [
        (pl.DataFrame({"image": ["a.png", "b.png"]}), "must hold the encoded image files as bytes"),
        (pl.DataFrame({"image": [1, 2]}), "got Int64"),
        (pl.DataFrame({"pixels": [b"x"]}), "needs a binary column named 'image'"),
    ],
)
def test_parquet_pool_of_wrong_types_refused_before_work(tmp_path, df, match):
    df.write_parquet(tmp_path / "pool.parquet")
    with pytest.raises(ValueError, match=match):
        build_manifest(tmp_path / "pool.parquet", CFG, progress=False)


def test_corrupt_parquet_refused(tmp_path):
    (tmp_path / "pool.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(ValueError, match="can't read the parquet pool"):
        build_manifest(tmp_path / "pool.parquet", CFG, progress=False)


def test_change_scan_never_blocks_or_reads_outside(tmp_path):
    """The sensor's change scan (ssl_core.data.pool_scan) follows the same rules."""
    import signal

    from ssl_core.data.pool_scan import content_digest, diff, scan

    pool, outside = tmp_path / "pool", tmp_path / "outside.png"
    pool.mkdir()
    outside.write_bytes(png(1))
    (pool / "a.png").write_bytes(png(2))
    (pool / "link.png").symlink_to(outside)
    os.mkfifo(pool / "fifo.png")
    os.mkfifo(tmp_path / "fifo_outside")
    (pool / "to_fifo.png").symlink_to(tmp_path / "fifo_outside")
    os.close(os.open(os.fsencode(pool) + b"/latin1-\xe9.png", os.O_CREAT | os.O_WRONLY))
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the scan blocked"))
    signal.alarm(20)
    try:
        first, _, complete = scan(pool, {})
        outside.write_bytes(png(3))  # content outside the pool is not the pool's
        second, _, _ = scan(pool, {})
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert complete and "fifo.png" not in first and len(first) == 4
    assert first["link.png"][3].startswith("symlink:")
    assert not diff(first, second).changed
    assert len(content_digest(first)) == 64  # a name that is not UTF-8 hashes too
