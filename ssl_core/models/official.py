"""Compatibility with the official DINOv2 checkpoint layout (torch.hub ``dinov2_vit*14[_reg]``).

Our module parameter names are the official ones, so conversion is mostly validation:
``infer_config`` reads the architecture from tensor shapes, ``load_backbone`` accepts a
safetensors file, a ``.pth`` (``torch.load(weights_only=True)``) or a dict, and flattens
"chunked blocks" keys (``blocks.<chunk>.<i>.*`` → ``blocks.<i>.*``). ``save_backbone`` writes
safetensors atomically with the config JSON in the file metadata (used on load when present,
so e.g. non-64-wide heads round-trip).

XCiT backbones (:mod:`ssl_core.models.xcit`) are saved and loaded by the same functions: their
config JSON carries ``"arch": "xcit"`` (a ViT config has no ``arch`` key), which picks the
architecture on load. XCiT has no official DINOv2 layout, so its architecture cannot be inferred
from shapes: a bare XCiT state dict needs ``config=``.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from ssl_core.models.presets import Backbone, BackboneConfig, build_from_config, config_from_dict
from ssl_core.models.vit import VisionTransformer, ViTConfig
from ssl_core.models.vit_config import swiglu_hidden_dim
from ssl_core.models.xcit import XCiT
from ssl_core.utils.atomic import write_bytes

HEAD_DIM = 64
"""Official DINOv2 head width: heads = width / 64."""
CONFIG_METADATA_KEY = "vit_config"
_CHUNKED_RE = re.compile(r"^blocks\.\d+\.(\d+)\.(.+)$")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")

StateDict = Mapping[str, Tensor]

MODEL_FILE = "model.safetensors"
"""The backbone file of a model folder (the teacher's and every student's)."""


def weights_file(source: str | Path) -> Path:
    """The backbone file of a model source: ``<folder>/model.safetensors`` for a model folder,
    the path itself for a weights file (e.g. an official release)."""
    path = Path(source)
    return path / MODEL_FILE if path.is_dir() else path


def flatten_chunked_blocks(state_dict: StateDict) -> dict[str, Tensor]:
    """Map ``blocks.<chunk>.<i>.rest`` keys to ``blocks.<i>.rest``; other keys unchanged.

    Raises:
        ValueError: A value is not a tensor, or two keys collide after flattening.
    """
    out: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if not isinstance(v, Tensor):
            raise ValueError(f"state dict entry {k!r} is {type(v).__name__}, not a tensor")
        m = _CHUNKED_RE.match(k)
        key = f"blocks.{m.group(1)}.{m.group(2)}" if m else k
        if key in out:
            raise ValueError(f"duplicate key {key!r} after flattening chunked blocks")
        out[key] = v
    return out


def _require(sd: StateDict, key: str, ndim: int) -> Tensor:
    if key not in sd:
        raise ValueError(f"state dict is missing required key {key!r}")
    t = sd[key]
    if t.ndim != ndim:
        raise ValueError(f"key {key!r} has shape {tuple(t.shape)}, expected {ndim} dims")
    return t


def infer_config(state_dict: StateDict, num_heads: int | None = None) -> ViTConfig:
    """Infer the architecture of an official-layout state dict from its tensor shapes.

    Args:
        state_dict: Official-layout tensors (chunked block keys allowed).
        num_heads: Head count (not recoverable from shapes); default ``width / 64``.

    Returns:
        The :class:`ViTConfig`; ``_reg`` checkpoints (with ``register_tokens``) get the exact-size
        antialiased pos-embed interpolation, others the upstream +0.1 offset.

    Raises:
        ValueError: Naming the offending key when a required key is missing or malformed.
    """
    sd = flatten_chunked_blocks(state_dict)
    if any(k.startswith("cls_attn_blocks.") for k in sd):
        raise ValueError(
            "state dict is an XCiT backbone (cls_attn_blocks.*), whose architecture is not "
            "inferred from shapes; pass config= or load the .safetensors written by save_backbone"
        )
    width = _require(sd, "cls_token", 3).shape[-1]
    proj = _require(sd, "patch_embed.proj.weight", 4)  # (D, C, P, P)
    if proj.shape[0] != width or proj.shape[2] != proj.shape[3]:
        raise ValueError(f"key 'patch_embed.proj.weight' has unexpected shape {tuple(proj.shape)}")
    patch, in_chans = proj.shape[2], proj.shape[1]
    n_pos = _require(sd, "pos_embed", 3).shape[1] - 1
    grid = math.isqrt(max(n_pos, 0))
    if n_pos <= 0 or grid * grid != n_pos:
        raise ValueError(f"key 'pos_embed' has {n_pos} patch positions, not a square grid")
    ids = sorted({int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))})
    if not ids:
        raise ValueError("state dict has no 'blocks.N.*' keys")
    if ids != list(range(len(ids))):
        missing = sorted(set(range(ids[-1] + 1)) - set(ids))
        raise ValueError(f"state dict is missing block(s) {missing} ('blocks.{missing[0]}.*')")
    regs = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    if num_heads is None:
        if width % HEAD_DIM:
            raise ValueError(f"width {width} is not a multiple of {HEAD_DIM}; pass num_heads")
        num_heads = width // HEAD_DIM
    b0 = "blocks.0."
    swiglu = f"{b0}mlp.w12.weight" in sd
    if swiglu:
        hidden = _require(sd, f"{b0}mlp.w3.weight", 2).shape[1]
        default_hidden = swiglu_hidden_dim(4 * width)
    else:
        hidden = _require(sd, f"{b0}mlp.fc1.weight", 2).shape[0]
        default_hidden = 4 * width
    ffn_bias_key = f"{b0}mlp.{'w12' if swiglu else 'fc1'}.bias"
    return ViTConfig(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=width,
        depth=len(ids),
        num_heads=num_heads,
        mlp_ratio=4.0,
        ffn_layer="swiglu" if swiglu else "mlp",
        ffn_hidden_dim=None if hidden == default_hidden else hidden,
        qkv_bias=f"{b0}attn.qkv.bias" in sd,
        proj_bias=f"{b0}attn.proj.bias" in sd,
        ffn_bias=ffn_bias_key in sd,
        layerscale_init=1.0 if f"{b0}ls1.gamma" in sd else None,  # torch.hub init value
        num_register_tokens=regs,
        interpolate_offset=0.0 if regs else 0.1,
        interpolate_antialias=bool(regs),
    )


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


class CheckpointError(ValueError):
    """A weights file that is corrupt, truncated, unsafe or of another architecture; the
    message names the file, what differs, and what to do."""


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU: tensors and plain containers only, so
    loading never runs code from the file.

    Raises:
        CheckpointError: a truncated / corrupt file, or one holding other Python objects.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: not a plain tensor file. Either it is corrupt, or it holds Python "
            "objects besides tensors and containers, which are never unpickled since that could "
            "run code from the file (torch.load weights_only=True). Re-save it as a state dict "
            f"(torch.save(model.state_dict(), ...)) or as safetensors. ({_first_line(e)})"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(
            f"{path}: unreadable, corrupt or truncated (an interrupted write, copy or download?): "
            f"{_first_line(e)}. Re-export or re-download it (or delete it to start over)."
        ) from None


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file.

    Raises:
        CheckpointError: a truncated or corrupt file.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except SafetensorError as e:
        raise CheckpointError(
            f"{path}: corrupt or truncated safetensors file ({_first_line(e)}). Re-export or "
            "re-download it."
        ) from None


def _shape(t: Any) -> tuple[int, ...] | str:
    return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__


def state_dict_differences(expected: StateDict, found: StateDict, n: int = 5) -> list[str]:
    """What differs between two state dicts, as lines naming up to ``n`` keys per kind:
    missing, unexpected, and shape mismatches with expected vs found shapes."""
    missing = [f"missing key {k!r}" for k in expected if k not in found]
    unexpected = [f"unexpected key {k!r}" for k in found if k not in expected]
    shapes = [
        f"shape mismatch for key {k!r}: expected {_shape(v)}, found {_shape(found[k])}"
        for k, v in expected.items()
        if k in found and _shape(found[k]) != _shape(v)
    ]
    lines = []
    for items in (missing, unexpected, shapes):
        lines += items[:n]
        if len(items) > n:
            lines.append(f"... and {len(items) - n} more like these")
    return lines


def check_state_dict(model: nn.Module, state_dict: StateDict, source: str = "state dict") -> None:
    """Raise :class:`CheckpointError` listing the first missing, unexpected and mis-shaped keys
    (expected vs found shapes) of ``state_dict`` for ``model``."""
    diffs = state_dict_differences(model.state_dict(), state_dict)
    if diffs:
        cfg = getattr(model, "config", None)
        arch = f" ({type(model).__name__}, {cfg})" if cfg is not None else ""
        raise CheckpointError(
            f"{source} does not fit the model{arch}:\n  "
            + "\n  ".join(diffs)
            + "\nWrong preset or config for these weights, or a truncated export: pick the "
            "matching preset (or let the config be read from the file), or re-export it."
        )


def _read(src: str | Path) -> tuple[dict[str, Tensor], BackboneConfig | None]:
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(path)
    if path.suffix == ".safetensors":
        tensors, meta = read_safetensors(path)
        cfg = meta.get(CONFIG_METADATA_KEY)
        return tensors, config_from_dict(json.loads(cfg)) if cfg else None
    obj = safe_torch_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return dict(obj), None


def load_backbone(
    src: str | Path | StateDict,
    config: BackboneConfig | None = None,
    num_heads: int | None = None,
) -> Backbone:
    """Build a backbone and load official-layout weights into it.

    Args:
        src: A ``.safetensors`` path, another path read with ``torch.load(weights_only=True)``,
            or a state dict.
        config: Architecture to use (a :class:`ViTConfig` or an XCiT config); default: the
            config stored in safetensors metadata (its ``arch`` picks ViT or XCiT), else
            :func:`infer_config` (ViT only).
        num_heads: Passed to :func:`infer_config` when inferring.

    Returns:
        The model, in eval mode.

    Raises:
        ValueError: The weights do not match the architecture (message names the key).
    """
    if isinstance(src, Mapping):
        raw, meta_cfg = dict(src), None
    else:
        raw, meta_cfg = _read(src)
    sd = flatten_chunked_blocks(raw)
    cfg = config or meta_cfg or infer_config(sd, num_heads=num_heads)
    model = build_from_config(cfg)
    check_state_dict(model, sd, source=str(src) if not isinstance(src, Mapping) else "state dict")
    model.load_state_dict(sd, strict=True)
    return model.eval()


def _find_vit(model: nn.Module) -> Backbone:
    for m in model.modules():
        if isinstance(m, VisionTransformer | XCiT):
            return m
    raise ValueError(f"{type(model).__name__} contains no VisionTransformer or XCiT")


def export_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Official-layout tensors (detached, contiguous CPU copies) of a backbone.

    Args:
        model: A :class:`VisionTransformer` or XCiT, or a module containing one (the first
            found). XCiT tensors include its BatchNorm buffers.
    """
    vit = _find_vit(model)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in vit.state_dict().items()}


def save_backbone(model: nn.Module, path: str | Path) -> Path:
    """Atomically write the backbone as safetensors in the official layout.

    Args:
        model: A :class:`VisionTransformer` or XCiT, or a module containing one.
        path: Destination file (conventionally ``*.safetensors``).

    Returns:
        The written path.
    """
    vit = _find_vit(model)
    meta = {"format": "pt", CONFIG_METADATA_KEY: json.dumps(vit.config.to_dict())}
    return save_safetensors(export_state_dict(vit), path, meta)


def deterministic_safetensors(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    """The bytes of a safetensors file, identical for equal tensors and metadata.

    ``safetensors`` (0.8) writes the ``__metadata__`` map of the JSON header in a random
    (hash) order, so two saves of the same model differ in bytes. The header is re-encoded
    here with every key sorted, then re-padded with spaces to a multiple of 8 bytes, as the
    format (u64 little-endian header length, JSON header, tensor data) allows; the tensor data
    and its offsets are safetensors' own.
    """
    raw = safetensors_bytes(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def save_safetensors(
    tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str]
) -> Path:
    """Atomically write ``tensors`` with ``metadata`` as a byte-deterministic safetensors file
    (:func:`deterministic_safetensors`); returns ``path``."""
    path = Path(path)
    write_bytes(path, deterministic_safetensors(tensors, metadata))
    return path
