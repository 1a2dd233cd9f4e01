"""``report.md`` from the evaluation metrics: one section per kind of evidence."""

from __future__ import annotations

NO_LABELS = (
    "No labels in this run (data.labels found none), so kNN accuracy, eval-set "
    "decontamination and class balance are skipped. The sections below are the label-free "
    "evidence. To get kNN numbers, give labels: a folder-per-class pool, a CSV/parquet of "
    "`path,label` (`make run POOL=... LABELS=file.csv`), or an eval folder (README)."
)


def _knn(metrics: dict) -> list[str]:
    ev = metrics["eval_set"]
    if not metrics["labels"]:
        return ["## kNN", "", NO_LABELS, ""]
    ks = sorted({int(k) for m in metrics["knn"].values() for k in m})
    lines = [
        f"## kNN top-1 on the eval query set (cosine, T={metrics['knn_temperature']:.2f})",
        "",
        f"{ev['bank']} bank and {ev['query']} query images, {ev['classes']} classes "
        f"(chance {100 / ev['classes']:.1f} %).",
        "",
        "| model | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for name, accs in metrics["knn"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * accs[str(k)]:.1f} %" for k in ks) + " |")
    return [*lines, ""]


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _linear_retrieval(metrics: dict) -> list[str]:
    """Linear probes (lr picked on a validation split of the bank) and retrieval, per model."""
    if not metrics["labels"]:
        return []
    lines = [
        "## Linear probes and retrieval (query side)",
        "",
        "Linear: top-1 of a linear classifier trained on cached bank features (the learning "
        "rate picked on 20 % of the bank): on the CLS token, and for ViTs on DINOv2's input "
        "(CLS of the last 4 blocks + average-pooled patch tokens). Retrieval: query images "
        "ranked against the bank by cosine similarity.",
        "",
        "| model | linear CLS | linear CLS x4 + avgpool | recall@1 | recall@5 | mAP |",
        "|---|---|---|---|---|---|",
    ]
    for name, lin in metrics["linear"].items():
        r = metrics["retrieval"][name]
        lines.append(
            f"| {name} | {_pct(lin['cls']['top1'])} | "
            f"{_pct(lin.get('cls4_avgpool', {}).get('top1'))} | {_pct(r['recall@1'])} | "
            f"{_pct(r['recall@5'])} | {r['mAP']:.3f} |"
        )
    return [*lines, ""]


def _cost(metrics: dict) -> list[str]:
    lines = [
        "## Cost",
        "",
        "| model | parameters (M) | GFLOPs / image | images/s (this machine, eval) |",
        "|---|---|---|---|",
    ]
    for name, c in metrics.get("cost", {}).items():
        lines.append(
            f"| {name} | {c['params_m']:.2f} | {c['gflops_per_image']:.3f} | "
            f"{c['images_per_s']:.0f} |"
        )
    return [*lines, ""]


def _health(metrics: dict) -> list[str]:
    lines = [
        "## Feature health (label-free)",
        "",
        "On a sample of curated pool images. Effective rank (RankMe; 1 = collapsed, up to the "
        "feature width) and uniformity (Wang & Isola; 0 = collapsed, lower = more spread) of "
        "the CLS features; patch-token norms before the last LayerNorm, with the share of "
        "tokens above 4x the median norm (the high-norm artifacts registers remove).",
        "",
        "| model | images | eff. rank | uniformity | patch norm median / p99 / max | "
        "outlier tokens | registers (median norm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, h in metrics["feature_health"].items():
        t = h.get("tokens")
        tok = (
            f"{t['patch_norm_median']:.1f} / {t['patch_norm_p99']:.1f} / {t['patch_norm_max']:.1f}"
            if t
            else "–"
        )
        out = f"{100 * t['outlier_share']:.2f} %" if t else "–"
        reg = "–"
        if t and t["num_register_tokens"]:
            reg = f"{t['num_register_tokens']} ({t['register_norm_median']:.1f})"
        lines.append(
            f"| {name} | {h['images']} | {h['effective_rank']:.1f} | {h['uniformity']:.2f} | "
            f"{tok} | {out} | {reg} |"
        )
    return [*lines, ""]


def _clusters(metrics: dict) -> list[str]:
    lines = [
        "## Cluster balance before / after curation (label-free)",
        "",
        "| level | entropy (1 = uniform) | Gini (0 = equal) | largest cluster share |",
        "|---|---|---|---|",
    ]
    for name, d in metrics["cluster_balance"].items():
        b, a = d["before"], d["after"]
        lines.append(
            f"| {name} | {b['entropy_normalised']:.3f} → {a['entropy_normalised']:.3f} | "
            f"{b['gini']:.3f} → {a['gini']:.3f} | "
            f"{b['largest_share']:.3f} → {a['largest_share']:.3f} |"
        )
    return [*lines, ""]


def _curation(cur: dict) -> list[str]:
    lines = [
        "## Class balance of the curated set (pool labels)",
        "",
        "| subset | class entropy (1 = uniform) | max/min | counts |",
        "|---|---|---|---|",
    ]
    for name, d in cur["class_distribution"].items():
        lines.append(
            f"| {name} | {d['entropy_normalised']:.3f} | {d['max_min_ratio']:.1f} | {d['counts']} |"
        )
    if "planted_duplicates" in cur:
        dups = ", ".join(
            f"{o}: {d['resolved']}/{d['planted_groups']}"
            for o, d in cur["planted_duplicates"].items()
        )
        broken = cur["broken_files"]
        lines += [
            "",
            f"Planted duplicate groups with at most one survivor: {dups}",
            f"Broken files quarantined: {broken['quarantined']} / {broken['planted']}",
        ]
    return [*lines, ""]


def report_md(metrics: dict) -> str:
    lines = ["# Evaluation report", "", *_knn(metrics), *_linear_retrieval(metrics)]
    lines += [*_cost(metrics), *_health(metrics), *_clusters(metrics)]
    if metrics.get("curation"):
        lines += _curation(metrics["curation"])
    lines += [
        "Plots: `cluster_sizes.png` (cluster sizes before/after curation per level), "
        "`cluster_samples.png` (curated images per top-level cluster)"
        + (", `class_distribution.png`." if metrics.get("curation") else "."),
        "",
        "The same report with every model in one table and the plots embedded: `report.html`.",
        "Lineage of every input: see `lineage.json` next to each artifact.",
    ]
    return "\n".join(lines) + "\n"
