"""Embedding models for curation and evaluation, and a batched, streamed embedding loop.

``pixels``: mean-centred, L2-normalised grey pixels — a strong near-duplicate signal and the
raw-pixel kNN baseline. ``bootstrap``: a seeded random-init ViT (first run, no teacher yet).
Anything else is a checkpoint path (own or official DINOv2 layout, safetensors).

Every embedder built by :func:`make_embedder` carries a ``fingerprint`` (what determines its
outputs); :func:`model_hash` turns it into the key of the embedding cache
(:mod:`ssl_core.curation.embed_cache`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ssl_core.data.dataset import ImageDataset, make_loader
from ssl_core.data.normalize import normalize
from ssl_core.utils.hashing import sha256_bytes, sha256_file, sha256_json
from ssl_core.utils.progress import progress_bar

# Bump when the decode/normalisation/pooling code changes the vectors of an unchanged model:
# every cached embedding is then recomputed.
EMBED_CODE_VERSION = 1
# Layer-scale of the untrained ``bootstrap`` ViT. The recipe's 1e-5 leaves the blocks ~inactive,
# so every image gets the same CLS token to float32 precision (std across images ~1e-7, kNN at
# chance on the demo); 0.1, the demo trainer's value, keeps the input's imprint.
BOOTSTRAP_LAYERSCALE_INIT = 0.1


class Embedder(Protocol):
    name: str
    channels: int
    image_size: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) in [0,1] -> (B,D)
        ...


class PixelEmbedder:
    channels = 1

    def __init__(self, image_size: int):
        self.name, self.image_size = "pixels", image_size
        self.fingerprint: dict[str, Any] = {"spec": "pixels", "image_size": image_size}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        return F.normalize(v - v.mean(1, keepdim=True), dim=1)


class BackboneEmbedder:
    """Normalised final-norm CLS token of a ViT backbone."""

    channels = 3

    def __init__(
        self, model: torch.nn.Module, image_size: int, name: str, fingerprint: dict | None = None
    ):
        self.model, self.image_size, self.name = model.eval(), image_size, name
        self.fingerprint: dict[str, Any] | None = fingerprint  # None: weights hashed on demand

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = self.model.forward_features(normalize(x.to(device)))
        return F.normalize(out["x_norm_clstoken"].float(), dim=1).cpu()


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over a module's parameters and buffers (sorted names, dtype, shape, bytes)."""
    parts = []
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        parts.append(f"{k}|{t.dtype}|{tuple(t.shape)}|{sha256_bytes(raw)}")
    return sha256_json(parts)


def model_hash(embedder: Embedder) -> str:
    """Cache key of an embedder: sha256 of its fingerprint (spec + weights + image size).

    ``pixels``: spec + image size; ``bootstrap``: spec + preset + seed + image size + init
    weights; checkpoints: file sha256 + image size; a bare :class:`BackboneEmbedder`: its
    weights. Other embedders need a ``fingerprint`` (a name alone does not pin the weights).
    """
    fp = getattr(embedder, "fingerprint", None)
    if fp is None and isinstance(embedder, BackboneEmbedder):
        fp = {
            "spec": "module",
            "weights": state_dict_sha256(embedder.model),
            "image_size": embedder.image_size,
        }
    if not fp:
        raise ValueError(
            f"embedder {getattr(embedder, 'name', embedder)!r} has no fingerprint: build it with "
            "make_embedder or give it a `fingerprint` dict (spec + weights hash + image_size)"
        )
    return sha256_json({"code_version": EMBED_CODE_VERSION, "channels": embedder.channels, **fp})


def make_embedder(spec: str, image_size: int, seed: int = 0, preset: str = "tiny") -> Embedder:
    """Build the embedder named by ``spec`` (``pixels``, ``bootstrap`` or a checkpoint path)."""
    if spec == "pixels":
        return PixelEmbedder(image_size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "bootstrap":
        from ssl_core.models.presets import build_backbone

        torch.manual_seed(seed)  # init RNG scoped to this call; embeddings are reproducible
        model = build_backbone(
            preset, img_size=image_size, layerscale_init=BOOTSTRAP_LAYERSCALE_INIT
        )
        fp = {
            "spec": "bootstrap",
            "preset": preset,
            "seed": seed,
            "image_size": image_size,
            "weights": state_dict_sha256(model),
        }
        return BackboneEmbedder(model.to(device), image_size, f"bootstrap:{preset}:seed{seed}", fp)
    from ssl_core.models.official import load_backbone, weights_file

    path = weights_file(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"embedding model {spec!r} is neither 'pixels', 'bootstrap' nor an existing "
            "checkpoint (a .safetensors file or a directory holding model.safetensors)"
        )
    fp = {"spec": "checkpoint", "file_sha256": sha256_file(path), "image_size": image_size}
    return BackboneEmbedder(load_backbone(path).to(device), image_size, f"checkpoint:{path}", fp)


def iter_embeddings(
    root: str | Path,
    paths: Sequence[str],
    embedder: Embedder,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "embed",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream (indices into ``paths``, float32 (B, D) embeddings) batch by batch.

    Undecodable files are skipped: their indices never appear.
    """
    ds = ImageDataset(root, paths, embedder.image_size, embedder.channels)
    for x, idx, _bad in progress_bar(
        make_loader(ds, batch_size), desc=desc, unit="batch", enabled=progress
    ):
        if len(idx) == 0:
            continue
        yield idx.numpy(), embedder(x).numpy().astype(np.float32)


def embed_paths(
    root: str | Path,
    paths: Sequence[str],
    embedder: Embedder,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "embed",
) -> tuple[np.ndarray, np.ndarray]:
    """Embed every path; returns (float32 (N, D) with zero rows for failures, ok mask (N,))."""
    out: np.ndarray | None = None
    ok = np.zeros(len(paths), dtype=bool)
    for idx, e in iter_embeddings(root, paths, embedder, batch_size, progress, desc):
        if out is None:
            out = np.zeros((len(paths), e.shape[1]), dtype=np.float32)
        out[idx] = e
        ok[idx] = True
    if out is None:
        raise ValueError(f"none of the {len(paths)} images under {root} could be decoded")
    return out, ok
