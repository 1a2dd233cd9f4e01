"""A few teacher-training steps on tiny generated images: outputs written, loss finite."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ssl_core.models.official import load_backbone
from ssl_core.train.distill import load_teacher
from ssl_core.train.ssl_model import SSLModel, _call_head
from ssl_core.train.teacher import train_teacher
from ssl_core.train.trainer import CollapseError
from tests.unit.train.conftest import OUTPUT_FILES

SUMMARY_KEYS = {
    "final_loss",
    "feature_std",
    "knn_top1",
    "chance",
    "steps",
    "images_per_s",
    "wall_s",
}


def test_train_teacher_writes_outputs(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    cfg = tiny_train_cfg(max_steps=4)
    seen = []
    summary = train_teacher(
        cfg,
        root,
        paths,
        tmp_path,
        knn_probe=lambda m: 0.5,
        chance=0.1,
        progress=False,
        on_step=lambda s, m: seen.append(m),
    )
    for name in OUTPUT_FILES:
        assert (tmp_path / name).is_file(), name
    assert set(summary) >= SUMMARY_KEYS
    assert summary["steps"] == 4 and len(seen) == 4
    assert math.isfinite(summary["final_loss"]) and summary["knn_top1"] == 0.5
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 4
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4]
    for key in (
        "loss",
        "lr",
        "wd",
        "momentum",
        "teacher_temp",
        "teacher_entropy",
        "feature_std",
        "images_per_s",
        "ibot_loss",
        "koleo_loss",
    ):
        assert math.isfinite(lines[-1][key]), key
    # schedules moved: lr warmed up, wd and momentum increased
    assert seen[0]["lr"] < seen[1]["lr"] and seen[0]["wd"] < seen[-1]["wd"]
    cfg_json = json.loads((tmp_path / "config.json").read_text())
    assert cfg_json["train"]["max_steps"] == 4 and cfg_json["vit"]["img_size"] == 16
    backbone = load_backbone(tmp_path / "model.safetensors")
    assert backbone.num_register_tokens == 2
    out = backbone(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 192) and torch.isfinite(out).all()


def test_no_probe_reports_zero(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    summary = train_teacher(tiny_train_cfg(max_steps=1), root, paths, tmp_path, progress=False)
    assert summary["knn_top1"] == 0.0 and summary["knn_probed"] is False


def test_nan_loss_raises(image_pool, tmp_path, monkeypatch, tiny_train_cfg):
    root, paths = image_pool
    import ssl_core.train.trainer as trainer

    real = trainer.train_step

    def nan_step(*args, **kwargs):
        m = real(*args, **kwargs)
        return {**m, "loss": float("nan")}

    monkeypatch.setattr(trainer, "train_step", nan_step)
    with pytest.raises(CollapseError, match="non-finite"):
        train_teacher(tiny_train_cfg(max_steps=2), root, paths, tmp_path, progress=False)


def test_too_small_dataset_is_a_clear_error(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    with pytest.raises(ValueError, match="less than one batch"):
        train_teacher(tiny_train_cfg(), root, paths[:8], tmp_path, progress=False)


def test_knn_every_logs_a_probe_curve_of_the_ema_model(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    probed: list[bool] = []

    def probe(backbone: torch.nn.Module) -> float:
        probed.append(backbone.training)  # the final probe gets an eval-mode model
        return float(len(probed)) / 10

    train_teacher(
        tiny_train_cfg(max_steps=5, knn_every=2), root, paths, tmp_path,
        knn_probe=probe, progress=False,
    )  # fmt: skip
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["knn_top1"]) for r in lines if "knn_top1" in r]
    assert curve == [(2, 0.1), (4, 0.2)]  # not at the last step: the summary holds that one
    assert len(probed) == 3 and probed[-1] is False
    assert json.loads((tmp_path / "summary.json").read_text())["knn_top1"] == 0.3


def test_bn_head_teacher_uses_batch_stats_and_round_trips(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    cfg = tiny_train_cfg(max_steps=3, head_use_bn=True)
    summary = train_teacher(cfg, root, paths, tmp_path, knn_probe=lambda m: 0.5, progress=False)
    assert math.isfinite(summary["final_loss"])
    net, _ = load_teacher(tmp_path)
    bns = [m for m in net.dino_head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == cfg.head_nlayers - 1  # after every hidden layer
    # the EMA teacher normalised its own batches (shared head: one CLS and one patch call per
    # step), so its running statistics moved off the init
    assert all(int(m.num_batches_tracked) == 2 * 3 for m in bns)
    assert not torch.allclose(bns[0].running_mean, torch.zeros_like(bns[0].running_mean))
    # a single token (batch statistics undefined) falls back to the running statistics
    one = torch.randn(1, net.backbone.embed_dim)
    expected = net.dino_head(one)  # eval mode: running statistics
    model = SSLModel(net).train()
    ema_bn = model.ema.dino_head.mlp[1]
    assert isinstance(ema_bn, torch.nn.BatchNorm1d)
    assert ema_bn.training and not model.ema.training and not model.ema.backbone.training
    torch.testing.assert_close(_call_head(model.ema.dino_head, one), expected)
    assert ema_bn.training  # mode restored


def test_free_prototype_norms_train_and_round_trip(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    cfg = tiny_train_cfg(max_steps=4, head_norm_last_layer=False, freeze_last_layer_epochs=0)
    train_teacher(cfg, root, paths, tmp_path, knn_probe=lambda m: 0.5, progress=False)
    net, _ = load_teacher(tmp_path)
    assert net.head_config["norm_last_layer"] is False
    g = net.dino_head.last_layer.parametrizations.weight.original0
    assert g.requires_grad
    assert not torch.equal(g, torch.ones_like(g))  # the EMA of the trained norms moved off 1
    # the default keeps them fixed at 1
    cfg = tiny_train_cfg(max_steps=2, freeze_last_layer_epochs=0)
    train_teacher(cfg, root, paths, tmp_path / "fixed", knn_probe=lambda m: 0.5, progress=False)
    g = load_teacher(tmp_path / "fixed")[0].dino_head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.equal(g, torch.ones_like(g))
