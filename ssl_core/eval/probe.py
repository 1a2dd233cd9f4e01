"""kNN evaluation of any embedder on the labelled eval set (bank → query)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
import torch

from ssl_core.curation.embed import BackboneEmbedder, Embedder, embed_paths
from ssl_core.data.dataset import ImageDataset
from ssl_core.data.demo_pool import EVAL_LABELS
from ssl_core.data.eval_set import load_eval_labels
from ssl_core.eval.knn import knn_accuracy


def load_eval_split(eval_dir: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    df = load_eval_labels(eval_dir)
    path = Path(eval_dir) / EVAL_LABELS
    bank, query = df.filter(pl.col("split") == "bank"), df.filter(pl.col("split") == "query")
    if bank.is_empty() or query.is_empty():
        raise ValueError(f"{path}: needs rows with split == 'bank' and split == 'query'")
    return bank, query


def knn_eval(
    embedder: Embedder,
    eval_dir: str | Path,
    ks: Sequence[int] = (10, 20),
    temperature: float = 0.07,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[int, float]:
    bank, query = load_eval_split(eval_dir)
    fb, okb = embed_paths(
        eval_dir, bank["path"].to_list(), embedder, batch_size, progress, "eval bank"
    )
    fq, okq = embed_paths(
        eval_dir, query["path"].to_list(), embedder, batch_size, progress, "eval query"
    )
    return knn_accuracy(
        torch.from_numpy(fb[okb]),
        torch.from_numpy(bank["label"].to_numpy()[okb]),
        torch.from_numpy(fq[okq]),
        torch.from_numpy(query["label"].to_numpy()[okq]),
        ks=ks,
        temperature=temperature,
    )


def make_knn_probe(
    eval_dir: str | Path, image_size: int, k: int = 20, temperature: float = 0.07
) -> Callable[[torch.nn.Module], float]:
    """A callable scoring a backbone by kNN top-1 (used as the trainer's sanity check)."""

    def probe(backbone: torch.nn.Module) -> float:
        was_training = backbone.training
        try:
            emb = BackboneEmbedder(backbone, image_size, "probe")
            return knn_eval(emb, eval_dir, ks=(k,), temperature=temperature)[k]
        finally:
            backbone.train(was_training)

    return probe


def sample_eval_images(
    eval_dir: str | Path, image_size: int, n: int, seed: int = 0
) -> torch.Tensor:
    """``n`` random query images (fewer if the split is smaller) as (n, 3, S, S) floats in [0, 1].

    Unreadable files are left out (diagnostics on a few hundred images, not an evaluation).
    """
    _, query = load_eval_split(eval_dir)
    paths = query.sample(min(n, len(query)), seed=seed)["path"].to_list()
    ds = ImageDataset(eval_dir, paths, image_size)
    items = [it for it in (ds[i] for i in range(len(ds))) if it is not None]
    if not items:
        raise ValueError(f"{eval_dir}: none of the {len(paths)} sampled query images is readable")
    return torch.stack([t for t, _ in items]).float()


def n_classes(eval_dir: str | Path) -> int:
    bank, _ = load_eval_split(eval_dir)
    return int(bank["label"].n_unique())
