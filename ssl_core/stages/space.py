"""What each stage will write at most, from the sizes of its inputs (before it starts).

Upper bounds, deliberately simple (the numbers are read from parquet metadata, ``.npy``
headers and the backbone preset; nothing is decoded or trained):

======================  ====================================================================
stage (module)          estimate (bytes)
======================  ====================================================================
import_demo             images x 8 KiB (a 28 px PNG rounds up to one 4 KiB block; x2 slack);
                        images = 10 classes x (max_per_class + eval bank + eval query) +
                        planted duplicates and broken files
ingest                  pool files x (1 KiB + 3 x path length): manifest, pool listing, eval set
embed                   (manifest rows + eval images) x (dim x 4 B x 2 + 1 KiB): the float32
                        matrix, the embedding cache shards, the ids
dedup                   embedded rows x 2 KiB (kept + removed tables, two paths a row)
cluster                 rows x (1 KiB + 16 B x levels) + centroids (sum k x dim x 4 B) x 2
                        (the stage's resumable level cache holds a copy)
curate                  clustered rows x 1 KiB
train_teacher           parameters (backbone, counted from its config + DINO/iBOT heads) x 4 B x 10:
                        checkpoint (student, EMA teacher, AdamW's two moments) twice while it is
                        replaced atomically, plus the exported model and head
distill                 the same per student preset
evaluate                64 MiB (metrics, report, plots; no features are written)
======================  ====================================================================
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl

from ssl_core.config import DEMO_POOL, Params

KIB, MIB = 1024, 2**20
TRAIN_COPIES = 10  # see the table above
UNKNOWN_DIM = 1536  # the widest DINOv2 backbone (ViT-g), when a checkpoint's width is unknown


def _rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item() if path.is_file() else 0


def _npy_shape(path: Path) -> tuple[int, ...]:
    return np.load(path, mmap_mode="r").shape if path.is_file() else (0, 0)


def _pool_files(pool: Path) -> tuple[int, int]:
    """(files, bytes of their relative paths) in a folder pool, or (rows, 0) of a parquet."""
    if pool.is_file():
        return _rows(pool), 0
    n = path_bytes = 0
    for root, _dirs, files in os.walk(pool):
        rel = len(os.path.relpath(root, pool)) + 1
        n += len(files)
        path_bytes += sum(rel + len(f.encode("utf-8", "surrogateescape")) for f in files)
    return n, path_bytes


def _embed_dim(params: Params) -> int:
    spec = params.embed.model
    if spec == "pixels":
        return params.embed.image_size**2
    if spec == "bootstrap":
        from ssl_core.models.preset_configs import get_config

        return int(get_config("tiny").embed_dim)
    cfg = Path(spec) / "config.json" if Path(spec).is_dir() else Path(spec).with_name("config.json")
    try:
        doc = json.loads(cfg.read_text())
        return int(doc.get("embed_dim") or doc.get("backbone", {}).get("embed_dim"))
    except (OSError, ValueError, TypeError, AttributeError):
        return UNKNOWN_DIM


def count_parameters(
    preset: str, image_size: int, hidden: int, bottleneck: int, out_dim: int
) -> int:
    """Backbone (counted from its config, :mod:`ssl_core.models.param_count`: no torch) plus
    two prototype heads (DINO and, at most, a separate iBOT head) of
    ``hidden``/``bottleneck``/``out_dim`` widths."""
    from ssl_core.models.param_count import count_backbone
    from ssl_core.models.preset_configs import get_config

    try:
        config = get_config(preset, img_size=image_size)
    except (TypeError, ValueError):  # a preset without img_size (or not divisible)
        config = get_config(preset)
    n = count_backbone(config)
    dim = config.embed_dim
    h, b = hidden, bottleneck
    head = dim * h + h * h + h * b + b * out_dim + 2 * h + b
    return n + 2 * head


def estimate(params: Params, stage: str) -> tuple[Path, int, str]:
    """(output folder, upper bound of the bytes the stage writes there, how it was estimated)
    for a stage module name (``embed``, ``train_teacher``, ...)."""
    p = params.paths
    if stage == "import_demo":
        d = params.demo
        n = 10 * (d.max_per_class + d.eval_bank_per_class + d.eval_query_per_class)
        n += d.exact_duplicates + d.near_duplicates + d.broken_files
        return Path(DEMO_POOL), n * 8 * KIB, f"{n} demo images x 8 KiB"
    if stage == "ingest":
        n, path_bytes = _pool_files(Path(p.pool))
        need = n * KIB + 3 * path_bytes
        return Path(p.manifest_dir), need, f"{n} pool files x (1 KiB + 3 x path length)"
    if stage == "embed":
        from ssl_core.data.eval_set import EVAL_SET
        from ssl_core.stages.ingest import MANIFEST

        manifest = Path(p.manifest_dir)
        n = _rows(manifest / MANIFEST) + _rows(manifest / EVAL_SET)
        dim = _embed_dim(params)
        need = n * (dim * 4 * 2 + KIB)
        return Path(p.embeddings_dir), need, f"{n} images x ({dim} dims x 4 B x 2 + 1 KiB)"
    if stage in ("dedup", "cluster"):
        n, dim = (_npy_shape(Path(p.embeddings_dir) / "pool.npy") + (0, 0))[:2]
        if stage == "dedup":
            return Path(p.dedup_dir), n * 2 * KIB, f"{n} embedded images x 2 KiB"
        from ssl_core import sizing

        try:
            levels = sizing.resolve_levels(params.cluster.levels, n)
        except ValueError:  # too few images: the stage itself says so
            levels = []
        need = n * (KIB + 16 * len(levels)) + 2 * sum(levels) * dim * 4
        return Path(p.clusters_dir), need, f"{n} images, levels {levels}, dim {dim}"
    if stage == "curate":
        from ssl_core.stages.cluster import ASSIGNMENTS

        n = _rows(Path(p.clusters_dir) / ASSIGNMENTS)
        return Path(p.curated_dir), n * KIB, f"{n} clustered images x 1 KiB"
    if stage == "train_teacher":
        t = params.train
        n = count_parameters(
            t.preset, t.image_size, t.head_hidden_dim, t.head_bottleneck_dim, t.out_dim
        )
        need = n * 4 * TRAIN_COPIES + 16 * MIB
        return Path(p.teacher_dir), need, f"{n:,} parameters x 4 B x {TRAIN_COPIES} + 16 MiB"
    if stage == "distill":
        d = params.distill
        size = d.image_size or params.train.image_size
        widths = (d.head_hidden_dim, d.head_bottleneck_dim, params.train.out_dim)
        counts = {s: count_parameters(s, size, *widths) for s in d.students}
        need = sum(counts.values()) * 4 * TRAIN_COPIES + 16 * MIB * len(counts)
        what = ", ".join(f"{s}: {n:,}" for s, n in counts.items())
        return Path(p.students_dir), need, f"parameters ({what}) x 4 B x {TRAIN_COPIES}"
    if stage == "evaluate":
        return Path(p.reports_dir), 64 * MIB, "report, metrics and plots: 64 MiB"
    raise ValueError(f"no space estimate for stage {stage!r}")
