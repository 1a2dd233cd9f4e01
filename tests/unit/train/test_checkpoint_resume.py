"""Kill-and-resume: training to N steps in one go and with an interruption at step k, resumed
from the last checkpoint, gives bit-identical weights and metrics on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ssl_core.train.checkpoint import load_checkpoint, save_checkpoint, verify_checkpoint
from ssl_core.train.teacher import train_teacher


class Killed(Exception):
    """Stands in for SIGKILL: raised from the step hook, after the checkpoint at step 3."""


def _metrics(path):
    drop = {"images_per_s"}
    return [
        {k: v for k, v in json.loads(ln).items() if k not in drop}
        for ln in path.read_text().splitlines()
    ]


def _kill_at(n):
    def hook(step, _m):
        if step == n:
            raise Killed

    return hook


def test_resume_is_bit_identical(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    # 64 images / batch 16 = 4 steps per epoch, 2 epochs; checkpoint at step 3, kill at 5 (the
    # resumed run replays the end of epoch 0 from batch 3 and crosses into epoch 1)
    cfg = tiny_train_cfg(checkpoint_every=3, log_every=1, drop_path_rate=0.1)
    full, cut = tmp_path / "full", tmp_path / "cut"
    s_full = train_teacher(cfg, root, paths, full, progress=False)
    assert s_full["steps"] == 8

    def kill_at_5(step, _m):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train_teacher(cfg, root, paths, cut, progress=False, on_step=kill_at_5)
    ck = load_checkpoint(cut / "checkpoint.pt")
    assert ck["train_state"]["step"] == 3 and ck["train_state"]["batch"] == 3
    s_cut = train_teacher(cfg, root, paths, cut, progress=False)
    assert s_cut["resumed_from_step"] == 3 and s_cut["steps"] == 8

    for name in ("model.safetensors", "head.safetensors"):
        a, b = load_file(full / name), load_file(cut / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert s_full["weights_sha256"] == s_cut["weights_sha256"]
    assert _metrics(full / "metrics.jsonl") == _metrics(cut / "metrics.jsonl")


def test_other_config_starts_fresh(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    train_teacher(tiny_train_cfg(max_steps=2), root, paths, tmp_path, progress=False)
    s = train_teacher(tiny_train_cfg(max_steps=1), root, paths, tmp_path, progress=False)
    assert s["resumed_from_step"] is None and s["steps"] == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_runtime_only_settings_still_resume(image_pool, tmp_path, tiny_train_cfg, caplog):
    root, paths = image_pool
    cfg = tiny_train_cfg(epochs=1, batch_size=16, checkpoint_every=2, max_steps=4)
    with pytest.raises(Killed):
        train_teacher(cfg, root, paths, tmp_path, progress=False, on_step=_kill_at(3))
    more = cfg.model_copy(update={"num_threads": 2, "log_every": 1, "knn_every": 3})
    s = train_teacher(more, root, paths, tmp_path, progress=False)
    assert s["resumed_from_step"] == 2 and s["steps"] == 4
    with caplog.at_level("WARNING", logger="sslops.train"):
        s = train_teacher(
            cfg.model_copy(update={"lr": 2e-3, "seed": 1}), root, paths, tmp_path, progress=False
        )
    assert s["resumed_from_step"] is None
    assert "other parameters (lr, seed)" in caplog.text  # the log names what changed


def test_checkpoint_is_weights_only_and_atomic(tmp_path):
    path = tmp_path / "c.pt"
    parts = {
        "model": {"w": torch.ones(2)},
        "train_state": {"step": 3},
        "rng": {"cpu": torch.get_rng_state()},
    }
    save_checkpoint(path, parts)
    save_checkpoint(path, {**parts, "train_state": {"step": 4}})
    # no temp files left; the size+hash record is the new file's only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "c.pt.record.json"]
    assert verify_checkpoint(path) is None
    assert load_checkpoint(path)["train_state"]["step"] == 4

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format_version": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_checkpoint(tmp_path / "evil.pt")


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "no_record"])
def test_damaged_checkpoint_is_not_resumed_from(
    image_pool, tmp_path, tiny_train_cfg, caplog, damage
):
    """A checkpoint that does not match its size+hash record is deleted with a warning naming
    it, and the run starts over: same weights as an uninterrupted run, never a resume."""
    root, paths = image_pool
    cfg = tiny_train_cfg(epochs=1, batch_size=16, checkpoint_every=1, max_steps=3)
    full = train_teacher(cfg, root, paths, tmp_path / "full", progress=False)
    out = tmp_path / "cut"
    with pytest.raises(Killed):
        train_teacher(cfg, root, paths, out, progress=False, on_step=_kill_at(2))
    ck = out / "checkpoint.pt"
    data = bytearray(ck.read_bytes())
    if damage == "flipped_byte":
        data[len(data) // 2] ^= 0x01
        ck.write_bytes(bytes(data))
    elif damage == "truncated":
        ck.write_bytes(bytes(data[:-100]))
    else:
        (out / "checkpoint.pt.record.json").unlink()
    with caplog.at_level("WARNING", logger="sslops.train"):
        s = train_teacher(cfg, root, paths, out, progress=False)
    assert f"{ck} not resumed from" in caplog.text
    assert s["resumed_from_step"] is None and s["steps"] == 3
    assert s["weights_sha256"] == full["weights_sha256"]
    assert verify_checkpoint(ck) is None  # the new run's checkpoint, recorded


def test_resume_inside_a_metrics_window_writes_the_same_lines(image_pool, tmp_path, tiny_train_cfg):
    """Lines average ``log_every`` steps; a checkpoint inside a window (step 4 of 4..6) carries
    the window's steps, so the resumed run writes the same line 6. A line torn by the kill
    (half written) is dropped, not read."""
    root, paths = image_pool
    cfg = tiny_train_cfg(checkpoint_every=2, log_every=3)
    full, cut = tmp_path / "full", tmp_path / "cut"
    train_teacher(cfg, root, paths, full, progress=False)
    with pytest.raises(Killed):
        train_teacher(cfg, root, paths, cut, progress=False, on_step=_kill_at(5))
    with (cut / "metrics.jsonl").open("a") as f:
        f.write('{"loss": 1.0, "st')  # a kill in the middle of an append
    s = train_teacher(cfg, root, paths, cut, progress=False)
    assert s["resumed_from_step"] == 4
    assert _metrics(full / "metrics.jsonl") == _metrics(cut / "metrics.jsonl")
    assert [m["step"] for m in _metrics(cut / "metrics.jsonl")] == [3, 6, 8]
