"""Stage ``report``: every model measured, curation diagnosed, ``report.md`` written.

With labels: kNN of every model (raw pixels, random init, teacher, students) on the eval set,
and the class balance of raw pool vs random subset vs curated set. Always, labels or not: the
label-free evidence (cluster balance before/after curation, cluster image grids, feature health
of every model: effective rank, uniformity, patch-token norm outliers and register norms).
"""

from __future__ import annotations

import json
import time
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
from ssl_core.eval.model_metrics import write_model_metrics
from ssl_core.eval.probe import sample_images
from ssl_core.eval.protocol import measure
from ssl_core.eval.provenance import model_provenance
from ssl_core.eval.register_twins import register_twins, twin_hint
from ssl_core.eval.report_figures import FIGURE_IMAGES, report_figures
from ssl_core.eval.report_html import report_html, report_images
from ssl_core.eval.report_md import report_md
from ssl_core.lineage import LINEAGE_FILE
from ssl_core.models.official import weights_file
from ssl_core.models.presets import list_presets
from ssl_core.stages.cluster import ASSIGNMENTS, level_col, resolved_levels
from ssl_core.stages.common import StageRun
from ssl_core.stages.curate import CURATED
from ssl_core.stages.ingest import MANIFEST
from ssl_core.stages.names import DISTILL_TEACHER
from ssl_core.train.teacher import build_teacher_model
from ssl_core.utils.atomic import atomic_dir, write_json, write_text
from ssl_core.utils.failpoints import failpoint

HEALTH_IMAGES = 256  # curated images sampled for the label-free feature-health measures


def _sources(params: Params) -> dict[str, str | None]:
    """Every model of the report -> its folder or weights file (None: built here)."""
    t = params.train
    src: dict[str, str | None] = {"raw_pixels": None, f"random_init_{t.preset}": None}
    src["teacher"] = params.paths.teacher_dir
    if params.distill.teacher:  # the students' teacher is not the teacher stage's
        src[DISTILL_TEACHER] = params.distill.teacher
    for name, path in params.eval.checkpoints.items():
        src[f"checkpoint_{name}"] = path
    for s in students_present(params):
        src[f"student_{s}"] = str(Path(params.paths.students_dir) / s)
    return src


def _file_sha256(emb: object) -> str | None:
    """sha256 of the weights file an embedder loaded (its fingerprint's), None without one."""
    return (getattr(emb, "fingerprint", None) or {}).get("file_sha256")


def _models(params: Params, sources: dict[str, str | None]) -> dict:
    t = params.train
    # the teacher at step 0 (same seed, layer-scale, registers): what training added
    random_vit = build_teacher_model(t).ema.backbone
    built = {
        "raw_pixels": PixelEmbedder(params.embed.image_size),
        f"random_init_{t.preset}": BackboneEmbedder(random_vit, t.image_size, "random"),
    }
    return {
        name: built[name] if path is None else make_embedder(path, t.image_size)
        for name, path in sources.items()
    }


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


def _model_info(params: Params, name: str, emb) -> dict:
    """Role, architecture and backbone config of a measured model (the register-twin pairing
    compares configs); a student's training wall time (the cost of another one)."""
    role = "student" if name.startswith("student_") else name
    role = "random" if name.startswith("random_init") else role
    info: dict = {"role": role, "arch": "pixels", "config": None}
    if isinstance(emb, BackboneEmbedder):
        info["config"] = emb.model.config.to_dict()
        info["arch"] = info["config"].get("arch", "vit")
    if role == "student":
        summary = Path(params.paths.students_dir) / name.removeprefix("student_") / "summary.json"
        if summary.is_file():
            info["train_wall_s"] = json.loads(summary.read_text()).get("wall_s")
    return info


def _twins(params: Params, models: dict) -> dict:
    """Register twin pairs of the run, or (none) the hint how to get one and what it costs."""
    pairs = register_twins(models)
    if pairs:
        return {"pairs": [list(p) for p in pairs], "hint": None}
    wall = {
        n.removeprefix("student_"): m.get("train_wall_s")
        for n, m in models.items()
        if m["role"] == "student"
    }
    return {"pairs": [], "hint": twin_hint(list(params.distill.students), list_presets(), wall)}


def _figure_images(params: Params, evset, sample: pl.Series) -> torch.Tensor:
    """``FIGURE_IMAGES`` fixed images for the attention/PCA grids: the first eval query images
    (with labels), else the first of the seeded curated sample."""
    if evset is not None:
        root, paths = evset.root, evset.query["path"].head(FIGURE_IMAGES).to_list()
    else:
        root, paths = Path(params.paths.pool), sample.head(FIGURE_IMAGES).to_list()
    return sample_images(root, paths, params.train.image_size, len(paths), params.seed)


def _write_report(tmp: Path, metrics: dict, models: dict, images: torch.Tensor) -> float:
    """Per-model metrics, plot data, model figures, report.md and report.html into ``tmp``;
    returns the seconds the model figures took."""
    write_model_metrics(metrics, tmp)
    t0 = time.perf_counter()
    figures = report_figures(metrics, models, images, tmp)
    figures_s = time.perf_counter() - t0
    write_text(tmp / "report.md", report_md(metrics, figures))
    write_text(tmp / "report.html", report_html(metrics, report_images(tmp, figures), figures))
    return figures_s


def _headline(metrics: dict) -> dict:
    """The numbers an asset page shows first (Dagster metadata comes from these stats)."""
    out: dict = {"labels": metrics["labels"], "knn": metrics["knn"]}
    for name, m in metrics["knn"].items():
        if "20" in m:
            out[f"knn20_{name}"] = m["20"]
    for name, h in metrics["feature_health"].items():
        out[f"effective_rank_{name}"] = round(h["effective_rank"], 2)
    for name, lin in metrics["linear"].items():
        out[f"linear_cls_{name}"] = lin["cls"]["top1"]
    return out


def run(params: Params, progress: bool = True) -> dict:
    st = StageRun("report", params, ("eval", "train", "distill"))
    cfg, evset = params.eval, load_eval_set(params)
    manifest = pl.read_parquet(Path(params.paths.manifest_dir) / MANIFEST)
    curated = pl.read_parquet(Path(params.paths.curated_dir) / CURATED)
    removed = pl.read_parquet(Path(params.paths.dedup_dir) / "removed.parquet")
    sample = curated["path"].sample(min(HEALTH_IMAGES, curated.height), seed=params.seed)
    knn, linear, retrieval, health, cost = {}, {}, {}, {}, {}
    sources = _sources(params)
    models = _models(params, sources)
    for name, emb in models.items():
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
        "models": {name: _model_info(params, name, emb) for name, emb in models.items()},
        "provenance": {
            name: model_provenance(path, _file_sha256(models[name]))
            for name, path in sources.items()
        },
    }
    metrics["register_twins"] = _twins(params, metrics["models"])
    inputs = {
        "teacher": weights_file(params.paths.teacher_dir),
        "curated": Path(params.paths.curated_dir) / CURATED,
    }
    with atomic_dir(params.paths.reports_dir) as tmp:
        write_json(tmp / "metrics.json", metrics)
        _plots(params, curated, sizes, metrics["curation"], tmp)
        failpoint("report.partial")
        images = _figure_images(params, evset, sample)
        figures_s = _write_report(tmp, metrics, models, images)
        st.lineage(tmp, inputs, {**_headline(metrics), "model_figures_s": round(figures_s, 1)})
    return {"knn": knn, "report": str(Path(params.paths.reports_dir) / "report.md")}
