"""Official DINOv2 checkpoint layout: inference of the architecture, load/save round trips."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from ssl_core.models.official import (
    export_state_dict,
    flatten_chunked_blocks,
    infer_config,
    load_backbone,
    save_backbone,
)
from ssl_core.models.vit import VisionTransformer, ViTConfig
from ssl_core.utils.atomic import atomic_path


def _randomize(m: VisionTransformer, seed: int = 0) -> VisionTransformer:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m.eval()


def _model(**kw) -> VisionTransformer:
    base = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2)
    base.update(kw)
    return _randomize(VisionTransformer(ViTConfig(**base)))


def _official_fixture(
    width=128, depth=3, patch=14, img=518, regs=4, swiglu=False, chunks=0
) -> dict[str, torch.Tensor]:
    """A state dict written key by key in the official torch.hub naming."""
    g = torch.Generator().manual_seed(1)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    n = (img // patch) ** 2
    sd = {"cls_token": r(1, 1, width), "pos_embed": r(1, 1 + n, width), "mask_token": r(1, width)}
    if regs:
        sd["register_tokens"] = r(1, regs, width)
    sd["patch_embed.proj.weight"] = r(width, 3, patch, patch)
    sd["patch_embed.proj.bias"] = r(width)
    hidden = 4 * width
    per_chunk = depth // chunks if chunks else depth
    for i in range(depth):
        p = f"blocks.{i // per_chunk}.{i}." if chunks else f"blocks.{i}."
        for name in ("norm1", "norm2"):
            sd[p + f"{name}.weight"], sd[p + f"{name}.bias"] = r(width) + 1, r(width)
        sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] = r(3 * width, width), r(3 * width)
        sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = r(width, width), r(width)
        sd[p + "ls1.gamma"], sd[p + "ls2.gamma"] = r(width) + 1, r(width) + 1
        if swiglu:
            h = (int(hidden * 2 / 3) + 7) // 8 * 8
            sd[p + "mlp.w12.weight"], sd[p + "mlp.w12.bias"] = r(2 * h, width), r(2 * h)
            sd[p + "mlp.w3.weight"], sd[p + "mlp.w3.bias"] = r(width, h), r(width)
        else:
            sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = r(hidden, width), r(hidden)
            sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = r(width, hidden), r(width)
    sd["norm.weight"], sd["norm.bias"] = r(width) + 1, r(width)
    return sd


def _assert_same_outputs(a: VisionTransformer, b: VisionTransformer, *shape: int) -> None:
    x = torch.randn(*shape)
    oa, ob = a.forward_features(x), b.forward_features(x)
    for k in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
        assert torch.equal(oa[k], ob[k]), k


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("regs,ffn", [(0, "mlp"), (4, "swiglu")])
def test_safetensors_round_trip(tmp_path, regs, ffn):
    m = _model(num_register_tokens=regs, ffn_layer=ffn, interpolate_offset=0.0)
    path = save_backbone(m, tmp_path / "backbone.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["backbone.safetensors"]  # no temp left
    loaded = load_backbone(path)
    assert loaded.config == m.config and not loaded.training
    _assert_same_outputs(m, loaded, 2, 3, 32, 32)
    _assert_same_outputs(m, loaded, 2, 3, 24, 40)  # interpolation mode survives the trip
    save_backbone(loaded, tmp_path / "again.safetensors")
    a, b = export_state_dict(m), export_state_dict(load_backbone(tmp_path / "again.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_keys_are_official():
    keys = set(export_state_dict(_model(num_register_tokens=4)))
    assert {"cls_token", "pos_embed", "register_tokens", "mask_token", "patch_embed.proj.weight",
            "patch_embed.proj.bias", "norm.weight", "norm.bias"} <= keys  # fmt: skip
    for sub in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
        assert f"blocks.1.{sub}.weight" in keys and f"blocks.1.{sub}.bias" in keys
    assert "blocks.1.ls1.gamma" in keys and "blocks.1.ls2.gamma" in keys
    assert "register_tokens" not in export_state_dict(_model())
    shapes = export_state_dict(_model(num_register_tokens=4))
    assert shapes["cls_token"].shape == (1, 1, 64) and shapes["mask_token"].shape == (1, 64)
    assert shapes["pos_embed"].shape == (1, 65, 64)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "b.safetensors"
    save_backbone(_model(), target)
    before = target.read_bytes()

    def torn(path, data):  # the disk fills up halfway through the write
        with atomic_path(path) as tmp:
            tmp.write_bytes(data[: len(data) // 2])
            raise OSError("disk full")

    monkeypatch.setattr("ssl_core.models.official.write_bytes", torn)
    with pytest.raises(OSError):
        save_backbone(_model(depth=1), target)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["b.safetensors"]


def test_pth_weights_only(tmp_path):
    sd = _official_fixture(width=64, depth=2, patch=4, img=32, regs=0)
    torch.save(sd, tmp_path / "ckpt.pth")
    m = load_backbone(tmp_path / "ckpt.pth")
    assert m.config.embed_dim == 64 and m.config.num_heads == 1
    assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    torch.save({"model": sd, "step": 3}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match="not a tensor"):
        load_backbone(tmp_path / "nested.pth")
    m(torch.randn(1, 3, 32, 32))


def test_safetensors_without_metadata(tmp_path):
    """A plain official-layout safetensors file (no config metadata) is inferred."""
    sd = _official_fixture(width=64, depth=2, patch=4, img=32, regs=4)
    save_file(sd, str(tmp_path / "hub.safetensors"))
    m = load_backbone(tmp_path / "hub.safetensors")
    assert m.config.num_register_tokens == 4 and m.config.interpolate_antialias
    assert torch.equal(m.register_tokens, sd["register_tokens"])


# ----------------------------------------------------------------------------- inference
@pytest.mark.parametrize("chunks", [0, 3])
@pytest.mark.parametrize("regs", [0, 4])
def test_infer_config_official_fixture(regs, chunks):
    sd = _official_fixture(width=128, depth=6, patch=14, img=518, regs=regs, chunks=chunks)
    assert len(sd["pos_embed"][0]) == 1370
    if chunks:
        assert "blocks.1.2.attn.qkv.weight" in sd and "blocks.2.attn.qkv.weight" not in sd
    c = infer_config(sd)
    assert (c.embed_dim, c.depth, c.num_heads, c.patch_size) == (128, 6, 2, 14)
    assert (c.img_size, c.in_chans, c.num_register_tokens) == (518, 3, regs)
    assert c.ffn_layer == "mlp" and c.hidden_dim == 512 and c.layerscale_init is not None
    assert (c.interpolate_offset, c.interpolate_antialias) == (
        (0.0, True) if regs else (0.1, False)
    )
    m = load_backbone(sd)
    flat = flatten_chunked_blocks(sd)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in flat.items())
    assert set(m.state_dict()) == set(flat)
    assert m(torch.randn(1, 3, 28, 42)).shape == (1, 128)


def test_infer_config_swiglu():
    sd = _official_fixture(width=128, depth=2, patch=14, img=224, regs=0, swiglu=True)
    c = infer_config(sd)
    assert c.ffn_layer == "swiglu" and c.ffn_hidden_dim is None and c.hidden_dim == 344
    assert c.img_size == 224
    load_backbone(sd)


def test_infer_config_num_heads_override():
    sd = _official_fixture(width=96, depth=1, patch=4, img=16, regs=0)
    with pytest.raises(ValueError, match="num_heads"):
        infer_config(sd)
    assert infer_config(sd, num_heads=3).num_heads == 3


# ----------------------------------------------------------------------------- corruption
def test_missing_key_named():
    sd = _official_fixture(width=64, depth=2, patch=4, img=32, regs=0)
    del sd["blocks.1.attn.proj.bias"]
    with pytest.raises(ValueError, match=r"blocks\.1\.attn\.proj\.bias"):
        load_backbone(sd)
    sd = _official_fixture(width=64, depth=2, patch=4, img=32, regs=0)
    del sd["cls_token"]
    with pytest.raises(ValueError, match="cls_token"):
        load_backbone(sd)


def test_wrong_shape_named():
    sd = _official_fixture(width=64, depth=2, patch=4, img=32, regs=0)
    sd["blocks.0.mlp.fc2.weight"] = torch.zeros(64, 100)
    with pytest.raises(ValueError, match=r"shape mismatch for key 'blocks\.0\.mlp\.fc2\.weight'"):
        load_backbone(sd)
    sd = _official_fixture(width=64, depth=2, patch=4, img=32, regs=0)
    sd["pos_embed"] = torch.zeros(1, 60, 64)
    with pytest.raises(ValueError, match="pos_embed"):
        load_backbone(sd)


def test_unexpected_and_missing_block():
    sd = _official_fixture(width=64, depth=3, patch=4, img=32, regs=0)
    sd["head.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match="unexpected key 'head.weight'"):
        load_backbone(sd)
    sd = _official_fixture(width=64, depth=3, patch=4, img=32, regs=0)
    for k in [k for k in sd if k.startswith("blocks.1.")]:
        del sd[k]
    with pytest.raises(ValueError, match=r"blocks\.1"):
        load_backbone(sd)


def test_infer_config_of_tiny_preset_export():
    from ssl_core.models.presets import build_vit

    m = build_vit("tiny", num_register_tokens=4)
    c = infer_config(export_state_dict(m))
    assert (c.embed_dim, c.depth, c.num_heads, c.patch_size, c.img_size) == (192, 6, 3, 4, 32)
    assert c.num_register_tokens == 4


def test_safetensors_bytes_are_deterministic(tmp_path):
    """safetensors 0.8 writes its metadata map in a random order; ours sorts the header, so
    equal tensors + metadata give equal bytes (checked across interpreters: the order is a
    per-process hash seed), and safetensors' own loader reads the file back."""
    import subprocess
    import sys

    from safetensors import safe_open
    from safetensors.torch import load_file

    code = (
        "import sys, torch\n"
        "from ssl_core.models.official import save_safetensors\n"
        "t = {'w': torch.arange(6.).reshape(2, 3), 'b': torch.ones(3, dtype=torch.float16),"
        " 'n': torch.arange(4)}\n"
        "m = {'format': 'pt', **{f'k{i}': str(i) for i in range(12)}}\n"
        "save_safetensors(t, sys.argv[1], m)\n"
    )
    files = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for f in files:
        subprocess.run([sys.executable, "-c", code, str(f)], check=True)
    assert len({f.read_bytes() for f in files}) == 1
    back = load_file(files[0])
    assert (
        torch.equal(back["w"], torch.arange(6.0).reshape(2, 3)) and back["n"].dtype == torch.int64
    )
    with safe_open(str(files[0]), framework="pt") as f:
        assert f.metadata() == {"format": "pt", **{f"k{i}": str(i) for i in range(12)}}
    # the backbone export: two saves of the same model, same bytes, same tensors on load
    m = _model()
    save_backbone(m, tmp_path / "a.safetensors")
    save_backbone(m, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    loaded = load_backbone(tmp_path / "a.safetensors")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in m.state_dict().items())
