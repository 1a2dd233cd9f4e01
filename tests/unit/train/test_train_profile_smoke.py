"""Smoke test of ``benchmarks/train_profile.py``: a profiled step and a one-round ablation of the
step's speed paths on a tiny recipe, and the ablation leaves the library's code as it found it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.fixture(scope="module")
def profile_mod():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_train_profile", BENCH / "train_profile.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)
    sys.path.remove(str(BENCH))


def test_profile_and_ablation_on_a_tiny_recipe(profile_mod, image_pool, tiny_train_cfg, tmp_path):
    root, _paths = image_pool
    cfg = tiny_train_cfg(batch_size=4, drop_path_rate=0.1, freeze_last_layer_epochs=1.0)
    trainer = profile_mod.build_trainer(cfg, root, tmp_path / "out")
    res = profile_mod.run_profile(trainer, warmup=1, steps=1)
    assert set(res["phases_s"]) == {*profile_mod.PHASES, "other"}
    assert res["phases_s"]["backward"] > 0 and res["phases_s"]["student_forward"] > 0
    assert res["images_per_s"] > 0

    originals = {n: getattr(m, a) for n, (m, a, _) in profile_mod.SPEED_PATHS.items()}
    optimizer = trainer.optimizer
    abl = profile_mod.run_ablation(trainer, warmup=1, rounds=1, steps=1)
    assert set(abl["saves_s_per_step"]) == set(profile_mod.SPEED_PATHS)
    assert all(len(v) == 1 for v in abl["ablation_s_per_step"].values())
    # every speed path is back in place and the trainer steps with its own optimiser again
    assert {n: getattr(m, a) for n, (m, a, _) in profile_mod.SPEED_PATHS.items()} == originals
    assert trainer.optimizer is optimizer
    jitters = [m for p in trainer.augment._pipes.values() for m in p if hasattr(m, "_hue_fn")]
    assert jitters and all(j._hue_fn is profile_mod.adjust_hue_fast for j in jitters)


def test_loss_forms_agree(profile_mod):
    """``benchmarks/loss_kernels.py``: the losses before #20 (what ``--disable soft_ce_*`` puts
    back), the logsumexp composite and the library's written-out form give one value and one
    gradient on small shapes."""
    spec = importlib.util.spec_from_file_location("bench_loss_kernels", BENCH / "loss_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x = mod.inputs(batch=4, k=64, masked=5)
    values, grads = {}, {}
    for form in mod.FORMS:
        values[form] = mod.run(form, x)
        grads[form] = (x[0].grad.float().clone(), x[2].grad.float().clone())
    for form in mod.FORMS:
        assert values[form] == pytest.approx(values["per_pair"], rel=1e-5)
        for g, g_ref in zip(grads[form], grads["per_pair"], strict=True):
            torch.testing.assert_close(g, g_ref, rtol=2e-2, atol=1e-5)  # bf16 gradients
