"""kNN evaluation of any embedder on the labelled eval set (bank → query)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
import torch

from ssl_core.curation.embed import BackboneEmbedder, Embedder, embed_paths
from ssl_core.data.dataset import ImageDataset
from ssl_core.data.eval_set import EvalSet
from ssl_core.eval.knn import knn_accuracy


def eval_features(
    embedder: Embedder, evset: EvalSet, batch_size: int = 256, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bank features, bank labels, query features, query labels); undecodable images left
    out."""
    out = []
    for name, split in (("bank", evset.bank), ("query", evset.query)):
        x, ok = embed_paths(
            evset.root, split["path"].to_list(), embedder, batch_size, progress, f"eval {name}"
        )
        out += [torch.from_numpy(x[ok]), torch.from_numpy(split["label"].to_numpy()[ok])]
    return out[0], out[1], out[2], out[3]


def knn_eval(
    embedder: Embedder,
    evset: EvalSet,
    ks: Sequence[int] = (10, 20),
    temperature: float = 0.07,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[int, float]:
    xb, yb, xq, yq = eval_features(embedder, evset, batch_size, progress)
    return knn_accuracy(xb, yb, xq, yq, ks=ks, temperature=temperature)


def make_knn_probe(
    evset: EvalSet, image_size: int, k: int = 20, temperature: float = 0.07
) -> Callable[[torch.nn.Module], float]:
    """A callable scoring a backbone by kNN top-1 (used as the trainer's sanity check)."""

    def probe(backbone: torch.nn.Module) -> float:
        was_training = backbone.training
        try:
            emb = BackboneEmbedder(backbone, image_size, "probe")
            return knn_eval(emb, evset, ks=(k,), temperature=temperature)[k]
        finally:
            backbone.train(was_training)

    return probe


def sample_eval_images(evset: EvalSet, image_size: int, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random query images (fewer if the split is smaller) as (n, 3, S, S) floats in [0, 1].

    Unreadable files are left out (diagnostics on a few hundred images, not an evaluation).
    """
    return sample_images(evset.root, evset.query["path"].to_list(), image_size, n, seed)


def sample_images(
    root: str | Path, paths: list[str], image_size: int, n: int, seed: int = 0
) -> torch.Tensor:
    """``n`` random images of ``paths`` under ``root`` (fewer if there are fewer) as
    (n, 3, S, S) floats in [0, 1]; unreadable files are left out."""
    paths = pl.Series(paths).sample(min(n, len(paths)), seed=seed).to_list()
    ds = ImageDataset(root, paths, image_size)
    items = [it for it in (ds[i] for i in range(len(ds))) if it is not None]
    if not items:
        raise ValueError(f"{root}: none of the {len(paths)} sampled images is readable")
    return torch.stack([t for t, _ in items]).float()
