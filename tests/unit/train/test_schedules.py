"""Schedules: warm-up and cosine endpoints, monotonicity, recipe values."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_core.config import TrainConfig
from ssl_core.train.schedules import build_schedules, cosine_schedule, linear_warmup_constant


def test_cosine_with_warmup_endpoints():
    s = cosine_schedule(1.0, 0.1, total_steps=110, warmup_steps=10)
    assert len(s) == 110 and s[0] == 0.0
    np.testing.assert_allclose(s[:10], np.arange(10) / 10)  # linear, excludes the peak
    assert s[10] == pytest.approx(1.0) and s[-1] == pytest.approx(0.1)
    assert np.all(np.diff(s[10:]) <= 1e-12)  # cosine part non-increasing


def test_cosine_increasing_and_freeze():
    s = cosine_schedule(0.994, 1.0, total_steps=50)
    assert s[0] == pytest.approx(0.994) and s[-1] == pytest.approx(1.0)
    assert np.all(np.diff(s) >= 0)
    f = cosine_schedule(1.0, 0.0, total_steps=20, freeze_steps=5)
    assert np.all(f[:5] == 0) and f[5] == pytest.approx(1.0)


def test_warmup_longer_than_run_is_clamped():
    s = cosine_schedule(1.0, 0.0, total_steps=5, warmup_steps=50)
    assert len(s) == 5 and np.all(np.diff(s) > 0)
    t = linear_warmup_constant(0.04, 0.07, total_steps=10, warmup_steps=4)
    np.testing.assert_allclose(t[:4], [0.04, 0.0475, 0.055, 0.0625])
    assert np.all(t[4:] == 0.07)


def test_single_step():
    assert cosine_schedule(2.0, 1.0, total_steps=1).tolist() == [2.0]
    with pytest.raises(ValueError):
        cosine_schedule(1.0, 0.0, total_steps=0)


def test_recipe_schedules():
    cfg = TrainConfig(
        epochs=10,
        lr=1e-3,
        min_lr=1e-6,
        warmup_epochs=2,
        weight_decay=0.04,
        weight_decay_end=0.2,
        momentum_teacher=0.994,
        momentum_teacher_final=1.0,
        teacher_temp=0.04,
        teacher_temp_final=0.07,
        teacher_temp_warmup_epochs=3,
        freeze_last_layer_epochs=1,
    )
    s = build_schedules(cfg, steps_per_epoch=10, total_steps=100)
    assert s.total_steps == 100
    assert s.lr[0] == 0 and s.lr[20] == pytest.approx(1e-3) and s.lr[-1] == pytest.approx(1e-6)
    assert s.weight_decay[0] == pytest.approx(0.04) and s.weight_decay[-1] == pytest.approx(0.2)
    assert s.momentum[0] == pytest.approx(0.994) and s.momentum[-1] == pytest.approx(1.0)
    assert s.teacher_temp[0] == pytest.approx(0.04) and np.all(s.teacher_temp[30:] == 0.07)
    assert np.all(s.last_layer_lr_mult[:10] == 0) and np.all(s.last_layer_lr_mult[10:] == 1)
    at = s.at(500)  # clamped to the last step
    assert at["momentum"] == pytest.approx(1.0) and at["wd"] == pytest.approx(0.2)


def test_compressed_schedule_for_max_steps():
    cfg = TrainConfig(epochs=10, warmup_epochs=2, freeze_last_layer_epochs=1)
    s = build_schedules(cfg, steps_per_epoch=20 / 10, total_steps=20)  # 20-step cap
    assert int(np.argmax(s.lr)) == 4 and np.count_nonzero(s.last_layer_lr_mult == 0) == 2
