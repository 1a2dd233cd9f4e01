from pathlib import Path

import pytest

from ssl_core.config import ConfigError, Params, TrainConfig, load_params, parse_overrides

REPO = Path(__file__).resolve().parents[3]


def test_repo_params_load_and_match_defaults_types():
    p = load_params(REPO / "params.yaml")
    assert isinstance(p, Params)
    assert p.cluster.levels == "auto" or p.cluster.levels == sorted(p.cluster.levels, reverse=True)


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


def test_parse_overrides_yaml_values_and_unknown_keys():
    upd = parse_overrides(
        ["lr=0.001", "local_crops_scale=[0.2, 0.5]", "head_use_bn=true"], TrainConfig
    )
    assert upd == {"lr": 0.001, "local_crops_scale": [0.2, 0.5], "head_use_bn": True}
    for bad in ("lr", "no_such_key=1"):
        with pytest.raises(ValueError, match="key=value"):
            parse_overrides([bad], TrainConfig)
