"""Stage ``evaluate``: kNN for every model (+ raw pixels, random init), curation diagnostics,
``metrics.json`` (DVC metrics), ``report.md`` and a class-distribution plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ssl_core.config import Params
from ssl_core.curation.embed import BackboneEmbedder, PixelEmbedder, make_embedder
from ssl_core.eval.curation_plots import (
    cluster_image_grid,
    plot_class_distribution,
    plot_cluster_sizes,
)
from ssl_core.eval.curation_report import curation_report
from ssl_core.eval.probe import knn_eval
from ssl_core.stages.cluster import ASSIGNMENTS, level_col
from ssl_core.stages.common import StageRun
from ssl_core.stages.curate import CURATED
from ssl_core.stages.ingest import MANIFEST
from ssl_core.train.teacher import build_teacher_model
from ssl_core.utils.atomic import atomic_dir, write_json, write_text


def _models(params: Params) -> dict:
    t = params.train
    # the teacher at step 0 (same seed, layer-scale, registers): what training added
    random_vit = build_teacher_model(t).ema.backbone
    models = {
        "raw_pixels": PixelEmbedder(params.embed.image_size),
        f"random_init_{t.preset}": BackboneEmbedder(random_vit, t.image_size, "random"),
        "teacher": make_embedder(params.paths.teacher_dir, t.image_size),
    }
    for s in params.distill.students:
        models[f"student_{s}"] = make_embedder(
            str(Path(params.paths.students_dir) / s), t.image_size
        )
    return models


def _report_md(metrics: dict) -> str:
    ks = sorted({int(k) for m in metrics["knn"].values() for k in m})
    temp = metrics["knn_temperature"]
    lines = [
        "# Evaluation report",
        "",
        f"## kNN top-1 on the eval query set (cosine, T={temp:.2f})",
        "",
        "| model | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for name, accs in metrics["knn"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * accs[str(k)]:.1f} %" for k in ks) + " |")
    cur = metrics.get("curation")
    if cur:
        lines += [
            "",
            "## Curation (demo labels)",
            "",
            "| subset | class entropy (1 = uniform) | max/min | counts |",
            "|---|---|---|---|",
        ]
        for name, d in cur["class_distribution"].items():
            lines.append(
                f"| {name} | {d['entropy_normalised']:.3f} | {d['max_min_ratio']:.1f} | {d['counts']} |"
            )
        lines += [
            "",
            "Planted duplicate groups with at most one survivor: "
            + ", ".join(
                f"{o}: {d['resolved']}/{d['planted_groups']}"
                for o, d in cur["planted_duplicates"].items()
            ),
            f"Broken files quarantined: {cur['broken_files']['quarantined']} / {cur['broken_files']['planted']}",
        ]
    lines += [
        "",
        "Plots: `cluster_sizes.png` (cluster sizes before/after curation per level), "
        "`cluster_samples.png` (curated images per top-level cluster)"
        + (", `class_distribution.png`." if cur else "."),
        "",
        "Lineage of every input: see `lineage.json` next to each artifact.",
    ]
    return "\n".join(lines) + "\n"


def _curation_plots(params: Params, curated: pl.DataFrame, cur: dict | None, out: Path) -> None:
    """Cluster sizes before/after curation per level, an image grid per top cluster, and (demo
    only) the class distribution of raw pool vs random subset vs curated subset."""
    table = pl.read_parquet(Path(params.paths.clusters_dir) / ASSIGNMENTS)
    before, after = {}, {}
    for lv, k in enumerate(params.cluster.levels):
        col = level_col(lv)
        before[f"level {lv} ({k} clusters)"] = np.bincount(table[col].to_numpy(), minlength=k)
        after[f"level {lv} ({k} clusters)"] = np.bincount(curated[col].to_numpy(), minlength=k)
    plot_cluster_sizes(before, after, out / "cluster_sizes.png")
    top = level_col(len(params.cluster.levels) - 1)
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


def run(params: Params, progress: bool = True) -> dict:
    st = StageRun("evaluate", params, ("eval", "train", "distill"))
    cfg = params.eval
    knn = {}
    for name, emb in _models(params).items():
        accs = knn_eval(
            emb, params.paths.eval_dir, cfg.ks, cfg.temperature, cfg.batch_size, progress
        )
        knn[name] = {str(k): round(v, 4) for k, v in accs.items()}
    manifest = pl.read_parquet(Path(params.paths.manifest_dir) / MANIFEST)
    curated = pl.read_parquet(Path(params.paths.curated_dir) / CURATED)
    removed = pl.read_parquet(Path(params.paths.dedup_dir) / "removed.parquet")
    metrics = {
        "knn": knn,
        "knn_temperature": cfg.temperature,
        "curation": curation_report(Path(params.paths.eval_dir), manifest, removed, curated),
    }
    inputs = {
        "teacher": Path(params.paths.teacher_dir) / "model.safetensors",
        "curated": Path(params.paths.curated_dir) / CURATED,
    }
    with atomic_dir(params.paths.reports_dir) as tmp:
        write_json(tmp / "metrics.json", metrics)
        write_text(tmp / "report.md", _report_md(metrics))
        if metrics["curation"]:
            rows = [
                {"subset": s, "class": i, "count": c}
                for s, d in metrics["curation"]["class_distribution"].items()
                for i, c in enumerate(d["counts"])
            ]
            pl.DataFrame(rows).write_csv(tmp / "class_distribution.csv")
        _curation_plots(params, curated, metrics["curation"], tmp)
        st.lineage(tmp, inputs, {"knn": knn})
    return {"knn": knn, "report": str(Path(params.paths.reports_dir) / "report.md")}
