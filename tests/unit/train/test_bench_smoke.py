"""Smoke test of ``benchmarks/train_step.py``: one timed step per path on ``tiny`` at batch 4."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "train_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


@pytest.fixture
def one_thread():
    """One intra-op thread: on shared 2-core machines two spinning threads are much slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_benchmark_preset_tiny_one_step(bench, one_thread):
    r = bench.benchmark_preset("tiny", "cpu", batch=4, steps=1, warmup=1, repeats=1)
    assert set(r) >= set(bench.RESULT_KEYS)
    assert r["batch"] == 4 and r["steps"] == 1 and r["repeats"] == 1
    assert (r["global_px"], r["local_px"], r["n_local"]) == (32, 16, 8)
    # same init, crops and masks, drop-path 0: the packed and naive steps give the same loss
    assert math.isfinite(r["loss_packed"])
    assert r["loss_packed"] == pytest.approx(r["loss_naive"], rel=1e-4)
    assert r["grad_norm_packed"] == pytest.approx(r["grad_norm_naive"], rel=1e-3)
    for k in ("img_s_packed", "img_s_naive", "ratio_packed_over_naive", "flops_per_step"):
        assert r[k] > 0 and math.isfinite(r[k]), k
    assert len(r["ratios"]) == 1 and r["mfu_packed"] is None  # no MFU on CPU
    # packed row of batch 4 with 2 globals + 8 locals: 1 global (69 tokens) + 4 locals (21)
    assert (r["tokens_global"], r["tokens_local"], r["packed_row_tokens"]) == (69, 21, 153)


def test_vit_flops_formula(bench):
    """The analytic forward FLOPs of one tiny image match a hand count."""
    from ssl_core.models.presets import build_vit

    vit = build_vit("tiny", num_register_tokens=4)
    d, h, n, depth = 192, 768, 69, 6
    want = 2 * 64 * 3 * 16 * d + depth * (8 * n * d * d + 4 * n * d * h + 4 * n * n * d)
    assert bench.vit_forward_flops(vit, n, 64) == want
