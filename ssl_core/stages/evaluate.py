"""Stage ``report``: every model measured, curation diagnosed, ``report.md`` written.

With labels: kNN of every model (raw pixels, random init, teacher, students) on the eval set,
and the class balance of raw pool vs random subset vs curated set. Always, labels or not: the
label-free evidence (cluster balance before/after curation, cluster image grids, feature health
of every model: effective rank, uniformity, patch-token norm outliers and register norms).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from ssl_core.config import Params
from ssl_core.curation.embed import BackboneEmbedder, PixelEmbedder, embed_paths, make_embedder
from ssl_core.data.eval_set import load_eval_set, load_pool_labels
from ssl_core.eval import feature_health as fh
from ssl_core.eval.curation_plots import (
    cluster_image_grid,
    plot_class_distribution,
    plot_cluster_sizes,
)
from ssl_core.eval.curation_report import curation_report
from ssl_core.eval.model_cost import backbone_cost, images_per_s
from ssl_core.eval.probe import sample_images
from ssl_core.eval.protocol import measure
from ssl_core.eval.report_html import report_html, report_images
from ssl_core.eval.report_md import report_md
from ssl_core.lineage import LINEAGE_FILE
from ssl_core.stages.cluster import ASSIGNMENTS, level_col, resolved_levels
from ssl_core.stages.common import StageRun
from ssl_core.stages.curate import CURATED
from ssl_core.stages.ingest import MANIFEST
from ssl_core.train.teacher import build_teacher_model
from ssl_core.utils.atomic import atomic_dir, write_json, write_text

HEALTH_IMAGES = 256  # curated images sampled for the label-free feature-health measures


def _models(params: Params) -> dict:
    t = params.train
    # the teacher at step 0 (same seed, layer-scale, registers): what training added
    random_vit = build_teacher_model(t).ema.backbone
    models = {
        "raw_pixels": PixelEmbedder(params.embed.image_size),
        f"random_init_{t.preset}": BackboneEmbedder(random_vit, t.image_size, "random"),
        "teacher": make_embedder(params.paths.teacher_dir, t.image_size),
    }
    for s in students_present(params):
        models[f"student_{s}"] = make_embedder(
            str(Path(params.paths.students_dir) / s), t.image_size
        )
    return models


def students_present(params: Params) -> list[str]:
    """Every finished student in ``paths.students_dir`` (a folder with its model and its
    ``lineage.json``, which the students stage writes last): those of ``distill.students``
    first, in that order, then any other, by name. Students are built one at a time (one
    Dagster partition, one DVC ``students@<name>`` stage), so the report reads the folder."""
    root = Path(params.paths.students_dir)
    found = {
        d.name
        for d in (root.iterdir() if root.is_dir() else ())
        if (d / "model.safetensors").is_file() and (d / LINEAGE_FILE).is_file()
    }
    listed = [s for s in params.distill.students if s in found]
    return listed + sorted(found - set(listed))


def _feature_health(emb, root: Path, paths: list[str], seed: int) -> tuple[dict, dict]:
    """Label-free: effective rank and uniformity of the model's features on ``paths``, patch
    token norm statistics for ViT backbones; and the model's cost (params, GFLOPs, img/s)."""
    feats, ok = embed_paths(root, paths, emb, 256, progress=False, desc="health")
    x = torch.from_numpy(feats[ok])
    out = {"images": int(ok.sum()), "effective_rank": fh.effective_rank(x)}
    out["uniformity"] = fh.uniformity(x)
    imgs = sample_images(root, paths, emb.image_size, len(paths), seed)  # [0, 1]
    cost = {"params_m": 0.0, "gflops_per_image": 0.0}
    if isinstance(emb, BackboneEmbedder):
        out["tokens"] = fh.token_norm_stats(emb.model, imgs)
        cost = backbone_cost(emb.model, emb.image_size)
    else:
        imgs = imgs[:, :1]  # pixels: one channel
    cost["images_per_s"] = images_per_s(emb, imgs)
    return out, cost


def _cluster_balance(params: Params, curated: pl.DataFrame) -> tuple[dict, dict, dict]:
    """Per level: cluster sizes before/after curation and their balance measures."""
    table = pl.read_parquet(Path(params.paths.clusters_dir) / ASSIGNMENTS)
    before, after, balance = {}, {}, {}
    for lv, k in enumerate(resolved_levels(params)):
        name, col = f"level {lv} ({k} clusters)", level_col(lv)
        before[name] = np.bincount(table[col].to_numpy(), minlength=k)
        after[name] = np.bincount(curated[col].to_numpy(), minlength=k)
        balance[name] = {
            "before": fh.cluster_balance(before[name]),
            "after": fh.cluster_balance(after[name]),
        }
    return before, after, balance


def _plots(params: Params, curated: pl.DataFrame, sizes: tuple, cur: dict | None, out: Path):
    plot_cluster_sizes(sizes[0], sizes[1], out / "cluster_sizes.png")
    top = level_col(len(resolved_levels(params)) - 1)
    by_cluster = {
        int(c): g["path"].to_list() for (c,), g in curated.group_by(top, maintain_order=True)
    }
    by_cluster = dict(sorted(by_cluster.items(), key=lambda kv: -len(kv[1])))
    cluster_image_grid(
        Path(params.paths.pool), by_cluster, out / "cluster_samples.png", seed=params.seed
    )
    if cur:
        plot_class_distribution(
            {k: v["counts"] for k, v in cur["class_distribution"].items()},
            out / "class_distribution.png",
        )
        rows = [
            {"subset": s, "class": i, "count": c}
            for s, d in cur["class_distribution"].items()
            for i, c in enumerate(d["counts"])
        ]
        pl.DataFrame(rows).write_csv(out / "class_distribution.csv")


def _headline(metrics: dict) -> dict:
    """The numbers an asset page shows first (Dagster metadata comes from these stats)."""
    out: dict = {"labels": metrics["labels"], "knn": metrics["knn"]}
    for name, m in metrics["knn"].items():
        if "20" in m:
            out[f"knn20_{name}"] = m["20"]
    for name, h in metrics["feature_health"].items():
        out[f"effective_rank_{name}"] = round(h["effective_rank"], 2)
    return out


def run(params: Params, progress: bool = True) -> dict:
    st = StageRun("report", params, ("eval", "train", "distill"))
    cfg, evset = params.eval, load_eval_set(params)
    manifest = pl.read_parquet(Path(params.paths.manifest_dir) / MANIFEST)
    curated = pl.read_parquet(Path(params.paths.curated_dir) / CURATED)
    removed = pl.read_parquet(Path(params.paths.dedup_dir) / "removed.parquet")
    sample = curated["path"].sample(min(HEALTH_IMAGES, curated.height), seed=params.seed)
    knn, linear, retrieval, health, cost = {}, {}, {}, {}, {}
    for name, emb in _models(params).items():
        if evset is not None:
            m = measure(emb, evset, cfg.ks, cfg.temperature, cfg.batch_size, params.seed, progress)
            knn[name], linear[name], retrieval[name] = m["knn"], m["linear"], m["retrieval"]
        root = Path(params.paths.pool)
        health[name], cost[name] = _feature_health(emb, root, sample.to_list(), params.seed)
    sizes = _cluster_balance(params, curated)
    metrics = {
        "labels": evset is not None,
        "eval_set": None
        if evset is None
        else {"bank": evset.bank.height, "query": evset.query.height, "classes": evset.n_classes},
        "knn": knn,
        "knn_temperature": cfg.temperature,
        "linear": linear,
        "retrieval": retrieval,
        "feature_health": health,
        "cost": cost,
        "cluster_balance": sizes[2],
        "curation": curation_report(load_pool_labels(params), manifest, removed, curated),
    }
    inputs = {
        "teacher": Path(params.paths.teacher_dir) / "model.safetensors",
        "curated": Path(params.paths.curated_dir) / CURATED,
    }
    with atomic_dir(params.paths.reports_dir) as tmp:
        write_json(tmp / "metrics.json", metrics)
        write_text(tmp / "report.md", report_md(metrics))
        _plots(params, curated, sizes, metrics["curation"], tmp)
        write_text(tmp / "report.html", report_html(metrics, report_images(tmp)))
        st.lineage(tmp, inputs, _headline(metrics))
    return {"knn": knn, "report": str(Path(params.paths.reports_dir) / "report.md")}
