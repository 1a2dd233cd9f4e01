import json

import pytest

from ssl_core.lineage import build_lineage, write_lineage
from ssl_core.utils.atomic import atomic_dir, write_json
from ssl_core.utils.hashing import hash_path


def test_atomic_dir_keeps_old_output_on_failure(tmp_path):
    out = tmp_path / "stage"
    with atomic_dir(out) as d:
        (d / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(out) as d:
        (d / "a.txt").write_text("half")
        raise RuntimeError("crash mid-stage")
    assert (out / "a.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]  # no temp dirs left


def test_atomic_dir_replaces_on_success(tmp_path):
    out = tmp_path / "stage"
    for v in ("v1", "v2"):
        with atomic_dir(out) as d:
            (d / "a.txt").write_text(v)
    assert (out / "a.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_write_json_atomic(tmp_path):
    write_json(tmp_path / "x.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [1, 2], "b": 1}


def test_hash_path_dir_changes_with_content(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("1")
    h1 = hash_path(tmp_path / "d")
    (tmp_path / "d" / "f").write_text("2")
    assert hash_path(tmp_path / "d") != h1


def test_lineage_record(tmp_path):
    f = tmp_path / "in.bin"
    f.write_bytes(b"abc")
    rec = build_lineage("s", {"x": {"a": 1}}, {"in": f}, seed=3, stats={"rows": 1})
    assert (
        rec["input_hashes"]["in"]
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert len(rec["params_hash"]) == 64 and rec["seed"] == 3 and "torch" in rec["libraries"]
    assert rec["git_sha"]
    write_lineage(tmp_path, rec)
    assert json.loads((tmp_path / "lineage.json").read_text())["stats"] == {"rows": 1}
