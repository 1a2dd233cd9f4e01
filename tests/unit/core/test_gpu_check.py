"""Pure parts of ``benchmarks/gpu_check.py``: goal verdicts, the partial kNN curve parser, the
teacher schedule and the capped subprocess runner."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("gpu_check", None)


def _preset(ratio: float, mfu: float | None) -> dict:
    return {"ratio": ratio, "img_s_packed": 130.0 * ratio, "img_s_naive": 130.0,
            "mfu_packed": mfu, "tflops_packed": None if mfu is None else mfu * 989.4,
            "peak_tflops": None if mfu is None else 989.4, "mfu_note": "no peak"}  # fmt: skip


def _steps(ratio_s=1.5, ratio_b=1.2, mfu=0.45, gpu_s=2.0, cpu_s=30.0, knn=0.8, raw=0.79):
    return {
        "train_step": {"presets": {"small": _preset(ratio_s, None), "base": _preset(ratio_b, mfu)}},
        "kmeans": {"n": 1_000_000, "dim": 384, "speedup": cpu_s / gpu_s,
                   "gpu": {"hkmeans_s": gpu_s}, "cpu": {"hkmeans_s": cpu_s}},
        "teacher": {"final_knn": knn, "raw_pixels": raw, "steps_done": 1954,
                    "views_seen": 1_000_448, "partial": False},
    }  # fmt: skip


def test_goals_pass_and_fail(gc):
    goals = gc.evaluate_goals(_steps())
    assert [g["verdict"] for g in goals] == ["pass", "fail", "pass", "pass", "pass"]
    assert "1.50x" in goals[0]["measured"] and "45.0 %" in goals[2]["measured"]
    assert "15.0x" in goals[3]["measured"]
    goals = gc.evaluate_goals(_steps(mfu=0.39, gpu_s=4.0, knn=0.7))
    assert [g["verdict"] for g in goals] == ["pass", "fail", "fail", "fail", "fail"]


def test_goals_unknown_peak_missing_steps_and_lower_bound(gc):
    steps = _steps(mfu=None)
    steps["kmeans"] = {"n": 1_000_000, "speedup": None, "speedup_lower_bound": 12.0,
                       "gpu": {"hkmeans_s": 5.0}, "cpu": {"status": "timed out", "seconds": 60.0}}  # fmt: skip
    goals = gc.evaluate_goals(steps)
    assert goals[2]["verdict"] == "n/a" and goals[2]["measured"].startswith("null")
    assert goals[3]["verdict"] == "pass" and goals[3]["measured"].startswith(">= 12.0x")
    empty = gc.evaluate_goals({})
    assert len(empty) == 5 and {g["verdict"] for g in empty} == {"n/a"}
    assert all(g["measured"] == "not measured" for g in empty)
    skipped = gc.evaluate_goals({"kmeans": {"gpu": {"skipped": "no GPU"}}})
    assert skipped[3]["verdict"] == "n/a" and "no GPU" in skipped[3]["measured"]


def test_dry_run_goals_are_marked(gc):
    steps = {"train_step": {"presets": {"tiny": _preset(0.97, None)}}}
    goals = gc.goals_of({"dry_run": True, "steps": steps})
    assert goals[0]["verdict"] == "dry run (fail)" and "preset tiny" in goals[0]["measured"]


def test_parse_metrics_partial_curve(gc):
    lines = [
        {"step": 5, "epoch": 0, "loss": 9.1, "images_per_s": 100.0},
        {"step": 10, "epoch": 0, "loss": 8.7, "images_per_s": 200.0},
        {"step": 10, "knn_top1": 0.61},
        {"step": 15, "epoch": 1, "loss": 8.2, "images_per_s": 300.0},
        {"step": 20, "knn_top1": 0.66},
    ]
    text = "\n".join(json.dumps(r) for r in lines) + '\n{"step": 25, "epoch": 1, "lo'
    m = gc.parse_metrics(text)
    assert m["curve"] == [{"step": 10, "knn_top1": 0.61}, {"step": 20, "knn_top1": 0.66}]
    assert m["last_step"] == 20 and m["images_per_s"] == pytest.approx(200.0)
    assert gc.parse_metrics("") == {"curve": [], "last_step": 0, "images_per_s": None}


def test_teacher_result_from_partial_run(gc, tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 5, "images_per_s": 50.0}\n{"step": 5, "knn_top1": 0.5}\n'
    )
    sched = {"batch": 64, "views_per_step": 512}
    r = gc.teacher_result(tmp_path, tmp_path / "missing.json", sched)
    assert r["partial"] and r["steps_done"] == 5 and r["views_seen"] == 2560
    assert r["final_knn"] == 0.5 and r["curve"][0]["images"] == 320


def test_teacher_schedule(gc):
    params = {"train": {"batch_size": 64, "n_local_crops": 6}}
    s = gc.teacher_schedule(params, 2975, None)
    assert s["views_per_step"] == 512 and s["steps"] == 1954  # ceil(1e6 / 512)
    assert s["steps"] * s["views_per_step"] >= 1_000_000
    assert s["epochs"] == 43 and s["knn_every"] == 390  # 46 steps per epoch
    dry = gc.teacher_schedule(params, 80, 3)  # dry run: 80 images = 1 step per epoch
    assert (dry["steps"], dry["epochs"], dry["knn_every"]) == (3, 3, 1)
    with pytest.raises(ValueError):
        gc.teacher_schedule(params, 10, 3)


def test_run_capped_kills_at_cap(gc, tmp_path):
    code = "import time; print('started', flush=True); time.sleep(30)"
    t = time.monotonic()
    p = gc.run_capped([sys.executable, "-c", code], 1.0, tmp_path / "log")
    assert p.timed_out and p.rc is None and time.monotonic() - t < 15
    assert "started" in p.stdout
    assert gc.outcome(p) == ("timed out", "timed out after 1 s")
    p = gc.run_capped([sys.executable, "-c", "import sys; sys.exit('boom')"], 30, tmp_path / "l2")
    status, detail = gc.outcome(p, "x")
    assert status == "failed" and "boom" in detail and detail.startswith("x: exit 1")


def test_dry_run_demo_matches_the_tests_tiny_demo(gc):
    from ssl_core.data.demo_pool import TINY_DEMO

    assert gc.TINY_DEMO["demo"] == TINY_DEMO
