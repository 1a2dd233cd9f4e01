"""kNN evaluation of any embedder on the labelled eval set (bank → query)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
import torch

from ssl_core.curation.embed import BackboneEmbedder, Embedder, embed_paths
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


def n_classes(eval_dir: str | Path) -> int:
    bank, _ = load_eval_split(eval_dir)
    return int(bank["label"].n_unique())
