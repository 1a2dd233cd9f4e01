from pathlib import Path

import pytest

from ssl_core.config import ConfigError, Params, load_params

REPO = Path(__file__).resolve().parents[3]


def test_repo_params_load_and_match_defaults_types():
    p = load_params(REPO / "params.yaml")
    assert isinstance(p, Params)
    assert p.cluster.levels == sorted(p.cluster.levels, reverse=True)


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("dedup:\n  near_dup_threshhold: 0.9\n")
    with pytest.raises(ConfigError) as e:
        load_params(f)
    assert "dedup.near_dup_threshhold" in str(e.value) and str(f) in str(e.value)
    assert "unknown key" in str(e.value)


def test_ill_typed_value(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("curate:\n  target_size: lots\n")
    with pytest.raises(ConfigError, match="curate.target_size"):
        load_params(f)


def test_cross_field_validation(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("cluster:\n  levels: [10, 20]\n")
    with pytest.raises(ConfigError, match="strictly decreasing"):
        load_params(f)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    f = tmp_path / "p.yaml"
    f.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(f)
