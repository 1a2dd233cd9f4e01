"""``report.md`` from the evaluation metrics: one section per kind of evidence."""

from __future__ import annotations

from ssl_core.eval.provenance import PROVENANCE_HEADER, provenance_rows

NO_LABELS = (
    "No labels in this run (data.labels found none), so kNN accuracy, eval-set "
    "decontamination and class balance are skipped. The sections below are the label-free "
    "evidence. To get kNN numbers, give labels: a folder-per-class pool, a CSV/parquet of "
    "`path,label` (`make run POOL=... LABELS=file.csv`), or an eval folder (README)."
)


def _table(heading: list[str], header: list[str], rows: list[list[object]]) -> list[str]:
    """``heading`` lines, then a markdown table of ``header`` and ``rows``, then a blank line."""
    lines = [*heading, "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _knn(metrics: dict) -> list[str]:
    ev = metrics["eval_set"]
    if not metrics["labels"]:
        return ["## kNN", "", NO_LABELS, ""]
    ks = sorted({int(k) for m in metrics["knn"].values() for k in m})
    heading = [
        f"## kNN top-1 on the eval query set (cosine, T={metrics['knn_temperature']:.2f})",
        "",
        f"{ev['bank']} bank and {ev['query']} query images, {ev['classes']} classes "
        f"(chance {100 / ev['classes']:.1f} %).",
        "",
    ]
    rows = [[name, *(_pct(accs[str(k)]) for k in ks)] for name, accs in metrics["knn"].items()]
    return _table(heading, ["model", *(f"k={k}" for k in ks)], rows)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _linear_retrieval(metrics: dict) -> list[str]:
    """Linear probes (lr picked on a validation split of the bank) and retrieval, per model."""
    if not metrics["labels"]:
        return []
    heading = [
        "## Linear probes and retrieval (query side)",
        "",
        "Linear: top-1 of a linear classifier trained on cached bank features (the learning "
        "rate picked on 20 % of the bank): on the CLS token, and for ViTs on DINOv2's input "
        "(CLS of the last 4 blocks + average-pooled patch tokens). Retrieval: query images "
        "ranked against the bank by cosine similarity.",
        "",
    ]
    header = ["model", "linear CLS", "linear CLS x4 + avgpool", "recall@1", "recall@5", "mAP"]
    rows = []
    for name, lin in metrics["linear"].items():
        r = metrics["retrieval"][name]
        cls4 = lin.get("cls4_avgpool", {}).get("top1")
        rows.append(
            [
                name,
                _pct(lin["cls"]["top1"]),
                _pct(cls4),
                _pct(r["recall@1"]),
                _pct(r["recall@5"]),
                f"{r['mAP']:.3f}",
            ]
        )
    return _table(heading, header, rows)


def _cost(metrics: dict) -> list[str]:
    header = ["model", "parameters (M)", "GFLOPs / image", "images/s (this machine, eval)"]
    rows = [
        [name, f"{c['params_m']:.2f}", f"{c['gflops_per_image']:.3f}", f"{c['images_per_s']:.0f}"]
        for name, c in metrics.get("cost", {}).items()
    ]
    return _table(["## Cost", ""], header, rows)


def _provenance(metrics: dict) -> list[str]:
    heading = [
        "## Provenance",
        "",
        "sha256 of each model's weights file; from its `lineage.json`: the hash of the params it "
        "was trained with, of the curated set it saw, and the git commit (`sslops lineage "
        "<folder>` traces the rest, up to the raw pool).",
        "",
    ]
    return _table(heading, PROVENANCE_HEADER, provenance_rows(metrics))


def _health(metrics: dict) -> list[str]:
    heading = [
        "## Feature health (label-free)",
        "",
        "On a sample of curated pool images. Effective rank (RankMe; 1 = collapsed, up to the "
        "feature width) and uniformity (Wang & Isola; 0 = collapsed, lower = more spread) of "
        "the CLS features; patch-token norms before the last LayerNorm, with the share of "
        "tokens above 4x the median norm (the high-norm artifacts registers remove).",
        "",
    ]
    header = [
        "model",
        "images",
        "eff. rank",
        "uniformity",
        "patch norm median / p99 / max",
        "outlier tokens",
        "registers (median norm)",
    ]
    rows = []
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
        rows.append(
            [
                name,
                h["images"],
                f"{h['effective_rank']:.1f}",
                f"{h['uniformity']:.2f}",
                tok,
                out,
                reg,
            ]
        )
    return _table(heading, header, rows)


def _clusters(metrics: dict) -> list[str]:
    header = ["level", "entropy (1 = uniform)", "Gini (0 = equal)", "largest cluster share"]
    rows = [
        [
            name,
            *(
                f"{d['before'][m]:.3f} → {d['after'][m]:.3f}"
                for m in ("entropy_normalised", "gini", "largest_share")
            ),
        ]
        for name, d in metrics["cluster_balance"].items()
    ]
    return _table(["## Cluster balance before / after curation (label-free)", ""], header, rows)


def _curation(cur: dict) -> list[str]:
    rows = [
        [name, f"{d['entropy_normalised']:.3f}", f"{d['max_min_ratio']:.1f}", d["counts"]]
        for name, d in cur["class_distribution"].items()
    ]
    lines = _table(
        ["## Class balance of the curated set (pool labels)", ""],
        ["subset", "class entropy (1 = uniform)", "max/min", "counts"],
        rows,
    )[:-1]
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


def twin_rows(metrics: dict) -> list[list[str]]:
    """One row per model of each register twin pair: registers, kNN, patch-norm statistics."""
    k = "20"
    rows = []
    for pair in (metrics.get("register_twins") or {}).get("pairs", []):
        for m in pair:
            t = (metrics.get("feature_health", {}).get(m) or {}).get("tokens") or {}
            reg = t.get("register_norm_median")
            rows.append(
                [
                    m,
                    str(t.get("num_register_tokens", "–")),
                    _pct(metrics.get("knn", {}).get(m, {}).get(k)),
                    f"{100 * t['outlier_share']:.2f} %" if "outlier_share" in t else "–",
                    f"{t['patch_norm_median']:.1f} / {t['patch_norm_max']:.1f}" if t else "–",
                    "–" if reg is None else f"{reg:.1f}",
                ]
            )
    return rows


TWIN_HEADER = [
    "model",
    "registers",
    "kNN k=20",
    "outlier tokens",
    "patch norm median / max",
    "register norm (median)",
]


def _twins(metrics: dict, figures: dict[str, str]) -> list[str]:
    """Registers side by side: the twin pairs' norm statistics and pictures, or the hint."""
    tw = metrics.get("register_twins")
    if not tw:
        return []
    lines = ["## Registers: with and without, side by side", ""]
    if not tw.get("pairs"):
        return [*lines, tw.get("hint") or "No register twin in this run.", ""]
    lines = _table(lines, TWIN_HEADER, twin_rows(metrics))
    for name, caption in figures.items():
        if name.startswith("register_twins_"):
            lines += [f"![{caption}]({name})", ""]
    return lines


def _figures(figures: dict[str, str]) -> list[str]:
    """The model figures (attention/PCA grids, token norms, accuracy plots) with captions."""
    shown = {n: c for n, c in figures.items() if not n.startswith("register_twins_")}
    if not shown:
        return []
    lines = ["## Model figures", ""]
    for name, caption in shown.items():
        lines += [f"`{name}`: {caption}", "", f"![{name}]({name})", ""]
    return lines


def report_md(metrics: dict, figures: dict[str, str] | None = None) -> str:
    """The markdown report; ``figures`` maps the PNGs written next to it to their captions."""
    figures = figures or {}
    lines = ["# Evaluation report", "", *_knn(metrics), *_linear_retrieval(metrics)]
    lines += [*_cost(metrics), *_provenance(metrics), *_health(metrics)]
    lines += _twins(metrics, figures)
    lines += [*_figures(figures), *_clusters(metrics)]
    if metrics.get("curation"):
        lines += _curation(metrics["curation"])
    lines += [
        "Per-model numbers for DVC: `metrics/<model>.json`; plot data: `plots/`.",
        "",
        "Plots: `cluster_sizes.png` (cluster sizes before/after curation per level), "
        "`cluster_samples.png` (curated images per top-level cluster)"
        + (", `class_distribution.png`." if metrics.get("curation") else "."),
        "",
        "The same report with every model in one table and the plots embedded: `report.html`.",
        "Lineage of every input: see `lineage.json` next to each artifact.",
    ]
    return "\n".join(lines) + "\n"
