"""Parameter counts from configs (no torch) equal the built backbones', for every preset."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ssl_core.models.param_count import count_backbone
from ssl_core.models.presets import build_from_config, get_config, list_presets

VARIANTS = [
    {},
    {"num_register_tokens": 4},
    {"layerscale_init": None},
    {"qkv_bias": False},
]
VIT_ONLY = [
    {"proj_bias": False, "ffn_bias": False},
    {"ffn_layer": "swiglu"},
    {"ffn_hidden_dim": 100},
    {"img_size": 56, "patch_size": 14},
]
XCIT_ONLY = [{"patch_size": p, "img_size": 56} for p in (4, 7, 8, 14)] + [
    {"cls_attn_layers": 1},
    {"mlp_ratio": 3.0},
]


def _built(config) -> int:
    with torch.device("meta"):
        model = build_from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", list_presets())
def test_count_equals_the_built_model(preset: str) -> None:
    xcit = preset.startswith("xcit")
    for overrides in VARIANTS + (XCIT_ONLY if xcit else VIT_ONLY):
        config = get_config(preset, **overrides)
        assert count_backbone(config) == _built(config), (preset, overrides)


def test_counting_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from ssl_core.models.param_count import count_backbone\n"
        "from ssl_core.models.preset_configs import get_config\n"
        "from ssl_core.stages.space import count_parameters\n"
        "assert count_backbone(get_config('small')) > 0\n"
        "assert count_parameters('small', 224, 2048, 256, 65536) > 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_not_a_config() -> None:
    with pytest.raises(TypeError, match="not a backbone config"):
        count_backbone("small")  # type: ignore[arg-type]
