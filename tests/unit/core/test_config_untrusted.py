"""An invalid params.yaml fails before any work, naming the dotted key, the value given and
the reason, and saying to fix params.yaml; also through the CLI (exit 2, nothing written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_core import cli
from ssl_core.config import ConfigError, load_params


def fails_with(tmp_path: Path, text: str) -> str:
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_params(f)
    msg = str(e.value)
    assert str(f) in msg
    return msg


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # unknown key, with the closest valid one
        ("train:\n  lrr: 0.1\n", "train.lrr = 0.1: unknown key in train (did you mean train.lr?)"),
        ("traim:\n  lr: 0.1\n", "traim: unknown key in the top level (did you mean train?)"),
        # wrong type
        ("ingest:\n  max_side: big\n", "ingest.max_side = 'big': Input should be a valid integer"),
        ("train:\n  global_crops_scale: 0.5\n", "train.global_crops_scale = 0.5: Input should be"),
        # out of range
        ("train:\n  lr: -0.001\n", "train.lr = -0.001: Input should be greater than 0"),
        ("dedup:\n  near_dup_threshold: 1.5\n", "dedup.near_dup_threshold = 1.5: Input should"),
        ("data:\n  labels: maybe\n", "data.labels = 'maybe': Input should be 'auto', 'none'"),
        # cross-field checks name the field, not just the section
        (
            "cluster:\n  levels: [10, 20]\n",
            "cluster.levels = [10, 20]: must be strictly decreasing",
        ),
        ("curate:\n  target_size: 0\n", "curate.target_size = 0: must be > 0 or auto"),
        (
            "train:\n  mask_ratio_min: 0.4\n  mask_ratio_max: 0.3\n",
            "train.mask_ratio_min = 0.4: must be <= mask_ratio_max (0.3)",
        ),
        (
            "distill:\n  local_crops_scale: [0.5, 0.2]\n",
            "distill.local_crops_scale = [0.5, 0.2]: must satisfy 0 < low <= high <= 1",
        ),
        ("train:\n  augment: {jiter_prob: 0}\n", "train.augment = {'jiter_prob': 0}: unknown"),
    ],
)
def test_invalid_value_names_key_value_and_reason(tmp_path, text, line):
    msg = fails_with(tmp_path, text)
    assert "fix these keys in params.yaml" in msg
    assert line in msg, msg


def test_every_problem_listed_at_once(tmp_path):
    msg = fails_with(tmp_path, "train:\n  lr: 0\n  batch_size: one\neval:\n  kss: [1]\n")
    assert "train.lr = 0" in msg and "train.batch_size = 'one'" in msg and "eval.kss" in msg


@pytest.mark.parametrize(
    "value", ["../elsewhere", "/tmp/somewhere/else", "data/../../x", ".", "data/.."]
)
def test_output_paths_outside_the_project_refused(tmp_path, value):
    proj = tmp_path / "proj"
    proj.mkdir()
    msg = fails_with(proj, f"paths:\n  teacher_dir: {value}\n")
    assert f"paths.teacher_dir = {value!r}" in msg and "outside the project" in msg


def test_output_paths_inside_allowed_and_inputs_anywhere(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "params.yaml").write_text(
        "data: {source: folder}\n"
        f"paths: {{pool: {tmp_path / 'pool'}, labels: {tmp_path / 'labels'}, "
        f"teacher_dir: {proj / 'data' / 'teacher'}, students_dir: out/../data/students}}\n"
    )
    p = load_params(proj / "params.yaml")
    assert p.paths.pool == str(tmp_path / "pool")


def test_cli_stops_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  lr: fast\n")
    stage = "manifest" if "manifest" in cli.STAGES else "ingest"  # renamed in this release
    rc = cli.main(["--params", "params.yaml", stage])
    err = capsys.readouterr().err
    assert rc == 2
    assert "train.lr = 'fast'" in err and "fix these keys in params.yaml" in err
    assert not (tmp_path / "data").exists()  # nothing ran, nothing was written
