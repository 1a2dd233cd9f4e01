"""Checkpoints and weight files as untrusted input: loading never runs code from the file, and
a truncated, corrupt or mismatched file gives an error naming the file and what differs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ssl_core.models.official import CheckpointError, load_backbone, save_backbone
from ssl_core.models.presets import build_backbone
from ssl_core.train.checkpoint import load_checkpoint, record_path, save_checkpoint
from ssl_core.train.distill import load_teacher
from ssl_core.train.teacher import train_teacher
from ssl_core.utils.hashing import record_files

REPO = Path(__file__).resolve().parents[3]


class Evil:
    """Unpickling this would create the marker file (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_every_torch_load_in_the_repo_is_weights_only():
    calls = []
    dirs = [d for d in REPO.iterdir() if d.is_dir() and not d.name.startswith(".")]
    for py in [p for d in dirs if d.name != "data" for p in d.rglob("*.py")]:
        for m in re.finditer(r"torch\.load\((.*?)\)\s*(?:\n|$|[\],;\[])", py.read_text(), re.S):
            calls.append((py.relative_to(REPO), m.group(1)))
    assert calls, "no torch.load found: the pattern is broken"
    unsafe = [(str(p), args) for p, args in calls if "weights_only=True" not in args]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


@pytest.mark.parametrize("loader", ["checkpoint", "backbone"])
def test_pickled_code_is_never_run(tmp_path, loader):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": {"w": Evil(marker)}}, path)
    load = load_checkpoint if loader == "checkpoint" else load_backbone
    with pytest.raises(CheckpointError, match=r"refused.*weights_only=True"):
        load(path)
    assert not marker.exists()


def _tiny_backbone_file(tmp_path: Path, name: str = "tiny") -> Path:
    return save_backbone(build_backbone(name, img_size=16), tmp_path / f"{name}.safetensors")


def test_truncated_files_named(tmp_path):
    good = _tiny_backbone_file(tmp_path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: corrupt or truncated"):
        load_backbone(cut)
    pt = tmp_path / "c.pt"
    save_checkpoint(pt, {"model": {"w": torch.zeros(1000)}})
    (tmp_path / "cut.pt").write_bytes(pt.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match=r"cut\.pt: unreadable, corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "empty.pt")


def test_wrong_preset_names_the_differing_keys_and_shapes(tmp_path):
    small = _tiny_backbone_file(tmp_path, "tiny")
    other = build_backbone("tiny_student", img_size=16)
    sd = dict(load_backbone(small).state_dict())
    with pytest.raises(CheckpointError) as e:
        load_backbone(sd, config=other.config)
    msg = str(e.value)
    assert "does not fit the model" in msg and "preset" in msg
    line = re.search(r"shape mismatch for key '([^']+)': expected \(.*\), found \(.*\)", msg)
    assert line, msg
    assert msg.count("\n  ") <= 3 * 6  # a few keys per kind, not thousands of lines


def test_missing_keys_listed(tmp_path):
    path = _tiny_backbone_file(tmp_path)
    sd = dict(load_backbone(path).state_dict())
    for k in [k for k in sd if k.startswith("blocks.0.")][:7] + ["norm.weight"]:
        del sd[k]
    bad = tmp_path / "bad.safetensors"
    cfg = load_backbone(path).config
    save_file(sd, str(bad))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors does not fit") as e:
        load_backbone(bad, config=cfg)
    assert "missing key 'blocks.0." in str(e.value) and "more like these" in str(e.value)


def test_checkpoint_missing_parts_named(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {}, "config": "{}"})
    with pytest.raises(CheckpointError, match=r"lacks part\(s\) \['optimizer'"):
        load_checkpoint(path, ("config", "model", "optimizer"))
    torch.save({"format_version": 99}, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="format version 1 .found 99"):
        load_checkpoint(tmp_path / "v99.pt")


def test_resume_from_damaged_checkpoint_is_a_clear_error(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    cfg = tiny_train_cfg(max_steps=2, checkpoint_every=1)
    out = tmp_path / "run"
    train_teacher(cfg, root, paths[:32], out, progress=False)
    ck_path = out / "checkpoint.pt"
    ck = torch.load(ck_path, weights_only=True)

    bad = dict(ck)
    key = next(k for k, v in ck["model"].items() if v.ndim == 2)
    bad["model"] = {**ck["model"], key: torch.zeros(3, 5)}
    # each file below is recorded as written (so it passes the size+hash check and reaches
    # the loader): a checkpoint that is intact but from other code or damaged before saving
    torch.save(bad, ck_path)
    record_files(record_path(ck_path), [ck_path])
    with pytest.raises(CheckpointError, match="does not fit this run's model") as e:
        train_teacher(cfg, root, paths[:32], out, progress=False)
    assert key in str(e.value) and "torch.Size([3, 5])" in str(e.value)

    ck_path.write_bytes(b"PK\x03\x04 cut short")
    record_files(record_path(ck_path), [ck_path])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train_teacher(cfg, root, paths[:32], out, progress=False)

    torch.save({k: v for k, v in ck.items() if k != "optimizer"}, ck_path)
    record_files(record_path(ck_path), [ck_path])
    with pytest.raises(CheckpointError, match=r"lacks part\(s\) \['optimizer'\]"):
        train_teacher(cfg, root, paths[:32], out, progress=False)


def test_teacher_head_truncated(image_pool, tmp_path, tiny_train_cfg):
    root, paths = image_pool
    out = tmp_path / "teacher"
    train_teacher(tiny_train_cfg(max_steps=1), root, paths[:16], out, progress=False)
    load_teacher(out)  # intact: loads
    head = out / "head.safetensors"
    head.write_bytes(head.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"head\.safetensors: corrupt or truncated"):
        load_teacher(out)
