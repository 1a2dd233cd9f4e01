"""Embedding models for curation and evaluation, and a batched, streamed embedding loop.

``pixels``: mean-centred, L2-normalised grey pixels — a strong near-duplicate signal and the
raw-pixel kNN baseline. ``bootstrap``: a seeded random-init ViT (first run, no teacher yet).
Anything else is a checkpoint path (own or official DINOv2 layout, safetensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ssl_core.data.dataset import ImageDataset, make_loader
from ssl_core.data.normalize import normalize


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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        return F.normalize(v - v.mean(1, keepdim=True), dim=1)


class BackboneEmbedder:
    """Normalised final-norm CLS token of a ViT backbone."""

    channels = 3

    def __init__(self, model: torch.nn.Module, image_size: int, name: str):
        self.model, self.image_size, self.name = model.eval(), image_size, name

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = self.model.forward_features(normalize(x.to(device)))
        return F.normalize(out["x_norm_clstoken"].float(), dim=1).cpu()


def make_embedder(spec: str, image_size: int, seed: int = 0, preset: str = "tiny") -> Embedder:
    """Build the embedder named by ``spec`` (``pixels``, ``bootstrap`` or a checkpoint path)."""
    if spec == "pixels":
        return PixelEmbedder(image_size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "bootstrap":
        from ssl_core.models.presets import build_vit

        torch.manual_seed(seed)  # init RNG scoped to this call; embeddings are reproducible
        model = build_vit(preset, img_size=image_size)
        return BackboneEmbedder(model.to(device), image_size, f"bootstrap:{preset}:seed{seed}")
    path = Path(spec)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"embedding model {spec!r} is neither 'pixels', 'bootstrap' nor an existing "
            "checkpoint (a .safetensors file or a directory holding model.safetensors)"
        )
    from ssl_core.models.official import load_backbone

    return BackboneEmbedder(load_backbone(path).to(device), image_size, f"checkpoint:{path}")


def embed_paths(
    root: str | Path,
    paths: Sequence[str],
    embedder: Embedder,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "embed",
) -> tuple[np.ndarray, np.ndarray]:
    """Embed every path; returns (float32 (N, D) with zero rows for failures, ok mask (N,))."""
    ds = ImageDataset(root, paths, embedder.image_size, embedder.channels)
    out: np.ndarray | None = None
    ok = np.zeros(len(paths), dtype=bool)
    for x, idx, _bad in tqdm(
        make_loader(ds, batch_size), desc=desc, unit="batch", disable=not progress
    ):
        if len(idx) == 0:
            continue
        e = embedder(x).numpy().astype(np.float32)
        if out is None:
            out = np.zeros((len(paths), e.shape[1]), dtype=np.float32)
        out[idx.numpy()] = e
        ok[idx.numpy()] = True
    if out is None:
        raise ValueError(f"none of the {len(paths)} images under {root} could be decoded")
    return out, ok
