"""Data source settings: inputs never overlap outputs, the demo builder refuses a user pool,
``use-folder`` edits params.yaml keeping comments, ``auto`` sizes follow the documented rules."""

from pathlib import Path

import pytest
import yaml

from ssl_core import sizing
from ssl_core.config import ConfigError, load_params
from ssl_core.stages import import_demo
from ssl_core.use_data import plan, use_demo, use_folder

REPO = Path(__file__).resolve().parents[3]


def _params_file(tmp_path: Path, **sections) -> Path:
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(sections))
    return f


@pytest.mark.parametrize(
    ("pool", "match"),
    [
        (".", "overlaps the output manifest_dir"),  # the project root holds every output
        ("data", "overlaps the output"),
        ("data/demo/pool", "overlaps the output demo builder"),
        ("data/manifest/imgs", "overlaps the output manifest_dir"),
        ("data/.cache", "overlaps the output caches"),
    ],
)
def test_user_pool_may_not_overlap_any_output(tmp_path, pool, match):
    f = _params_file(tmp_path, data={"source": "folder"}, paths={"pool": pool, "labels": "x"})
    with pytest.raises(ConfigError, match=match):
        load_params(f)


def test_user_pool_in_its_own_folder_is_fine(tmp_path):
    for pool in ("data/mypool", str(tmp_path.parent / "elsewhere")):
        f = _params_file(tmp_path, data={"source": "folder"}, paths={"pool": pool, "labels": "l"})
        assert load_params(f).paths.pool == pool


def test_demo_source_pins_the_demo_folders(tmp_path):
    f = _params_file(tmp_path, data={"source": "demo"}, paths={"pool": "data/mypool"})
    with pytest.raises(ConfigError, match="set data.source: folder"):
        load_params(f)


def test_demo_builder_refuses_a_user_pool(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pool = tmp_path / "data" / "mypool"
    pool.mkdir(parents=True)
    (pool / "mine.png").write_bytes(b"precious")
    f = _params_file(tmp_path, data={"source": "folder"}, paths={"pool": "data/mypool"})
    with pytest.raises(ConfigError, match="nothing to do"):
        import_demo.run(load_params(f), progress=False)
    assert (pool / "mine.png").read_bytes() == b"precious"
    assert not (tmp_path / "data" / "demo").exists()


def test_use_folder_keeps_comments_and_validates(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text((REPO / "params.yaml").read_text())
    pool = tmp_path / "photos"
    pool.mkdir()
    (pool / "a.png").write_bytes(b"x")
    text = use_folder(f, str(pool), "none")
    p = load_params(f)
    assert (p.data.source, p.data.labels, p.paths.pool) == ("folder", "none", "photos")
    assert "read-only" in text and "1 candidate files" in text
    assert "# The single source of parameters" in f.read_text()  # comments survive
    (tmp_path / "data" / "manifest").mkdir(parents=True)
    with pytest.raises(ConfigError, match="overlaps"):
        use_folder(f, str(tmp_path / "data"), "auto")
    assert load_params(f).paths.pool == "photos"  # a refused edit leaves the file as it was
    use_demo(f)
    assert f.read_text() == (REPO / "params.yaml").read_text()
    assert "raw_pool" in plan(f)


@pytest.mark.parametrize(
    ("n", "levels", "target", "epochs"),
    [
        (7438, [186, 27], 2975, (5, 6)),  # the demo: close to the measured [200, 30] / 3,000
        (3700, [92, 13], 1480, (10, 12)),
        (500, [12], 500, (30, 36)),
        (1_000_000, [25000, 3571, 510, 73], 400_000, (1, 1)),
    ],
)
def test_auto_sizes(n, levels, target, epochs):
    assert sizing.auto_levels(n) == levels
    assert sizing.auto_target_size(n) == target
    assert (
        sizing.auto_epochs(target, sizing.TEACHER_IMAGES),
        sizing.auto_epochs(target, sizing.STUDENT_IMAGES),
    ) == epochs


def test_explicit_sizes_win(tmp_path):
    assert sizing.resolve_levels([10, 2], 5000) == [10, 2]
    assert sizing.resolve_target_size(123, 5000) == 123
    with pytest.raises(ValueError, match="at least 2"):
        sizing.auto_levels(1)
