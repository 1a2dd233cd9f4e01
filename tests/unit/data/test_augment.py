import dataclasses

import pytest
import torch

from ssl_core.config import AUGMENT_KEYS, TrainConfig
from ssl_core.data.augment import MultiCropAugmentation, MultiCropConfig

MEAN = torch.tensor(MultiCropConfig.mean).view(1, 3, 1, 1)
STD = torch.tensor(MultiCropConfig.std).view(1, 3, 1, 1)


def _images(c=3, b=4, size=32, seed=0):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_scaled_for_keeps_ratios_and_patch_multiples():
    cfg = MultiCropConfig.scaled_for(32, patch_size=4)
    assert (cfg.global_size, cfg.local_size) == (32, 16)
    assert MultiCropConfig.scaled_for(224, patch_size=14).local_size == 98
    assert cfg.blur_kernel % 2 == 1 and cfg.blur_sigma[1] < MultiCropConfig.blur_sigma[1]
    assert MultiCropConfig.scaled_for(32, 4, n_local=2).n_local == 2
    with pytest.raises(ValueError):
        MultiCropAugmentation(MultiCropConfig(global_size=30), patch_size=4)


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_dtype_device_finite(channels):
    cfg = MultiCropConfig.scaled_for(32, 4, n_local=3)
    x = _images(c=channels)
    out = MultiCropAugmentation(cfg, 4)(x, seed=0)
    assert len(out["global"]) == 2 and len(out["local"]) == 3
    for t in out["global"]:
        assert t.shape == (4, 3, 32, 32)
    for t in out["local"]:
        assert t.shape == (4, 3, 16, 16)
    for t in out["global"] + out["local"]:
        assert t.dtype == x.dtype and t.device == x.device and torch.isfinite(t).all()


def test_grayscale_kept_single_channel():
    cfg = MultiCropConfig.scaled_for(32, 4, n_local=2, to_rgb=False)
    out = MultiCropAugmentation(cfg, 4)(_images(c=1), seed=0)
    assert out["global"][0].shape == (4, 1, 32, 32) and out["local"][1].shape == (4, 1, 16, 16)
    assert all(torch.isfinite(t).all() for t in out["global"] + out["local"])


def test_determinism_and_global_rng_untouched():
    aug = MultiCropAugmentation(MultiCropConfig.scaled_for(32, 4, n_local=2), 4)
    x = _images()
    state = torch.get_rng_state()
    a = aug(x, generator=torch.Generator().manual_seed(7))
    b = aug(x, generator=torch.Generator().manual_seed(7))
    c = aug(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(state, torch.get_rng_state())
    flat = lambda o: o["global"] + o["local"]  # noqa: E731
    assert all(torch.equal(p, q) for p, q in zip(flat(a), flat(b), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(flat(a), flat(c), strict=True))
    assert torch.equal(aug(x, seed=3)["local"][0], aug(x, seed=3)["local"][0])
    # crops differ from each other and across images
    assert not torch.equal(a["global"][0], a["global"][1])


def test_solarize_only_on_second_global():
    cfg = MultiCropConfig.scaled_for(
        32,
        4,
        n_global=3,
        n_local=2,
        solarize_prob=1.0,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=(0.0, 0.0, 0.0),
    )
    out = MultiCropAugmentation(cfg, 4)(_images(b=8), seed=0)
    raw = [t * STD + MEAN for t in out["global"] + out["local"]]  # undo normalisation
    # solarize maps every value >= 0.5 to 1 - v, so the solarized crop has max <= 0.5
    assert raw[1].max() <= 0.5 + 1e-5
    for i in [0, 2, 3, 4]:
        assert raw[i].max() > 0.8
    off = MultiCropAugmentation(MultiCropConfig.scaled_for(32, 4, n_local=0, solarize_prob=0.0), 4)
    assert (off(_images(b=8), seed=0)["global"][1] * STD + MEAN).max() > 0.8


def test_normalisation_applied():
    cfg = MultiCropConfig.scaled_for(
        32,
        4,
        n_local=0,
        global_scale=(1.0, 1.0),
        flip_prob=0.0,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=(0.0, 0.0, 0.0),
        solarize_prob=0.0,
    )
    x = torch.full((2, 3, 32, 32), 0.5)
    out = MultiCropAugmentation(cfg, 4)(x, seed=0)["global"][0]
    assert torch.allclose(out, (0.5 - MEAN) / STD * torch.ones_like(out), atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    aug = MultiCropAugmentation(MultiCropConfig.scaled_for(32, 4, n_local=2), 4)
    x = _images().cuda()
    a, b = aug(x, seed=1), aug(x, seed=1)
    assert a["local"][0].device == x.device and torch.equal(a["global"][1], b["global"][1])


def test_recipe_augment_overrides_reach_the_crop_config():
    recipe = TrainConfig(
        n_local_crops=3,
        local_crops_scale=(0.1, 0.4),
        augment={"solarize_prob": 0.0, "blur_prob": [0.0, 0.0, 0.5], "jitter_prob": 0.3},
    )
    mc = MultiCropConfig.for_recipe(recipe, 28, 7)
    assert (mc.n_local, mc.local_scale, mc.global_size, mc.local_size) == (3, (0.1, 0.4), 28, 14)
    assert (mc.solarize_prob, mc.blur_prob, mc.jitter_prob) == (0.0, (0.0, 0.0, 0.5), 0.3)
    assert mc.jitter_brightness == MultiCropConfig().jitter_brightness  # untouched keys: recipe


def test_augment_keys_are_multicrop_fields_and_unknown_keys_fail():
    fields = {f.name for f in dataclasses.fields(MultiCropConfig)}
    assert set(AUGMENT_KEYS) <= fields
    with pytest.raises(ValueError, match="unknown augment keys.*solarise_prob"):
        TrainConfig(augment={"solarise_prob": 0.0})
    with pytest.raises(ValueError, match="unknown augment keys.*global_size"):
        TrainConfig(augment={"global_size": 64})  # sizes come from image_size / patch_size
