"""The training engine's small parts: run state, metrics log, step count (no training)."""

from __future__ import annotations

import json

import pytest

from ssl_core.config import TrainConfig
from ssl_core.train.checkpoint import load_checkpoint, save_checkpoint
from ssl_core.train.metrics_log import MetricsLog, Throughput
from ssl_core.train.train_state import TrainState
from ssl_core.train.trainer import total_steps

# the checkpoint's ``train_state`` keys, in the order runs have always written them
TRAIN_STATE_KEYS = ["step", "epoch", "batch", "n_bad", "images", "wall_s", "recent_losses", "last"]


def test_train_state_round_trips_through_a_checkpoint(tmp_path):
    st = TrainState(step=5, epoch=1, batch=1, n_bad=2, images=80, wall_s=1.5)
    st.recent_losses, st.last = [1.0, 0.5], {"step": 5, "loss": 0.5}
    assert list(st.state_dict()) == TRAIN_STATE_KEYS
    save_checkpoint(tmp_path / "c.pt", {"train_state": st.state_dict()})
    back = TrainState.from_state_dict(load_checkpoint(tmp_path / "c.pt")["train_state"])
    assert back == st


def test_train_state_tolerates_missing_and_unknown_keys():
    st = TrainState.from_state_dict({"step": 3, "future_field": 1})
    assert st == TrainState(step=3)
    a, b = TrainState(), TrainState()
    a.recent_losses.append(1.0)
    assert b.recent_losses == []  # no shared mutable defaults


def test_metrics_log_writes_window_means(tmp_path):
    path = tmp_path / "metrics.jsonl"
    ml = MetricsLog(path, enabled=True)
    ml.start(None)
    ml.add({"step": 1, "epoch": 0, "loss": 2.0}, 1, 0, flush=False)
    ml.add({"step": 2, "epoch": 0, "loss": 1.0}, 2, 0, flush=True)
    ml.knn(2, 0.25)
    ml.add({"step": 3, "epoch": 1, "loss": 4.0}, 3, 1, flush=True)
    lines = path.read_text().splitlines()
    # epoch keeps its place and is an integer; step comes last
    assert lines[0] == json.dumps({"epoch": 0, "loss": 1.5, "step": 2})
    assert json.loads(lines[1]) == {"step": 2, "knn_top1": 0.25}
    assert json.loads(lines[2]) == {"epoch": 1, "loss": 4.0, "step": 3}
    ml.start(resumed_from=2)  # a resumed run drops the lines past its checkpoint
    assert len(path.read_text().splitlines()) == 2
    ml.start(None)  # a fresh run starts over
    assert not path.exists()


def test_metrics_log_of_other_ranks_writes_nothing(tmp_path):
    ml = MetricsLog(tmp_path / "metrics.jsonl", enabled=False)
    ml.start(None)
    ml.add({"step": 1, "loss": 1.0}, 1, 0, flush=True)
    ml.knn(1, 0.5)
    assert not (tmp_path / "metrics.jsonl").exists() and ml.window == []


def test_throughput():
    t = Throughput(wall_before=10.0)
    assert t.images_per_s() == 0.0 and t.wall_s() >= 10.0
    t.add(32, 2.0)
    t.add(32, 2.0)
    assert t.images_per_s() == 16.0


def test_total_steps():
    cfg = TrainConfig(preset="tiny", epochs=2, batch_size=16)
    assert total_steps(cfg, 64, 1) == 8
    assert total_steps(cfg, 64, 2) == 4  # each rank reads half
    assert total_steps(cfg.model_copy(update={"max_steps": 3}), 64, 1) == 3
    with pytest.raises(ValueError, match="less than one batch"):
        total_steps(cfg, 30, 2)  # 15 per rank
