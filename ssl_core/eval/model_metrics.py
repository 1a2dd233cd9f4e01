"""Per-model numbers for DVC: one flat JSON per model and the CSV data of the report's plots.

``<reports_dir>/metrics/<model>.json`` holds flat numbers (``dvc metrics show`` lists them and
``dvc metrics diff`` compares them across commits); ``<reports_dir>/plots/*.csv`` are the data
of the accuracy plots (``dvc plots show`` / ``diff``). Both are declared at the top level of
``dvc.yaml``. The report gate (``ssl_core.quality.suites.report_suite``) reads the per-model
files back and fails on a missing or NaN metric.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ssl_core.utils.atomic import write_json, write_text

MODEL_METRICS_DIR = "metrics"  # read by ssl_core/stages/checks.py under the same name
PLOTS_DIR = "plots"
KNN_VS_K_DIR = "knn_vs_k"  # one CSV per model: DVC draws one plot per file, revisions overlaid
ACC_VS_PARAMS_CSV = "accuracy_vs_params.csv"
HEADLINE_K = "20"  # kNN k of the accuracy-vs-parameters plot (the smallest k when 20 is absent)


def _num(value: object) -> float | None:
    """A JSON number as float (NaN kept, so the gate sees it), None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _dig(d: dict, *keys: str) -> object:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)  # type: ignore[assignment]
    return d


def flat_model_metrics(metrics: dict, model: str) -> dict[str, float]:
    """The flat numbers of one model: ``knn_top1_k<k>`` per k, ``linear_cls_top1``,
    ``linear_cls4_avgpool_top1`` (ViT/XCiT), ``recall_at_1``, ``recall_at_5``, ``map``,
    ``params_m``, ``gflops_per_image``, ``images_per_s``, ``effective_rank``, ``uniformity``,
    ``outlier_share`` (backbones). A measure the run did not produce is left out."""
    out: dict[str, float | None] = {}
    for k, v in (_dig(metrics, "knn", model) or {}).items():  # type: ignore[union-attr]
        out[f"knn_top1_k{k}"] = _num(v)
    lin = _dig(metrics, "linear", model) or {}
    out["linear_cls_top1"] = _num(_dig(lin, "cls", "top1"))  # type: ignore[arg-type]
    out["linear_cls4_avgpool_top1"] = _num(_dig(lin, "cls4_avgpool", "top1"))  # type: ignore[arg-type]
    ret = _dig(metrics, "retrieval", model) or {}
    for src, dst in (("recall@1", "recall_at_1"), ("recall@5", "recall_at_5"), ("mAP", "map")):
        out[dst] = _num(ret.get(src))  # type: ignore[union-attr]
    cost = _dig(metrics, "cost", model) or {}
    for key in ("params_m", "gflops_per_image", "images_per_s"):
        out[key] = _num(cost.get(key))  # type: ignore[union-attr]
    health = _dig(metrics, "feature_health", model) or {}
    out["effective_rank"] = _num(health.get("effective_rank"))  # type: ignore[union-attr]
    out["uniformity"] = _num(health.get("uniformity"))  # type: ignore[union-attr]
    out["outlier_share"] = _num(_dig(health, "tokens", "outlier_share"))  # type: ignore[arg-type]
    return {k: v for k, v in out.items() if v is not None}


def report_models(metrics: dict) -> list[str]:
    """Every model the report measured, in report order."""
    seen: dict[str, None] = dict.fromkeys(metrics.get("models") or {})
    for key in ("knn", "cost", "feature_health"):
        seen.update(dict.fromkeys(metrics.get(key) or {}))
    return list(seen)


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def knn_vs_k_rows(metrics: dict, model: str) -> list[list[object]]:
    """``[k, knn_top1]`` rows of one model, by increasing k."""
    accs = _dig(metrics, "knn", model) or {}
    return [[int(k), accs[k]] for k in sorted(accs, key=int)]  # type: ignore[union-attr]


def accuracy_vs_params_rows(metrics: dict) -> list[dict]:
    """One dict per model with labels: ``model``, ``params_m``, ``knn_top1`` (at k=20, else the
    smallest k, named in ``knn_k``) and ``linear_cls_top1`` (None when absent)."""
    rows = []
    for m, accs in (metrics.get("knn") or {}).items():
        k = HEADLINE_K if HEADLINE_K in accs else min(accs, key=int, default=None)
        params = _num(_dig(metrics, "cost", m, "params_m"))
        if k is None or params is None:
            continue
        rows.append(
            {
                "model": m,
                "params_m": params,
                "knn_k": int(k),
                "knn_top1": _num(accs[k]),
                "linear_cls_top1": _num(_dig(metrics, "linear", m, "cls", "top1")),
            }
        )
    return rows


def write_model_metrics(metrics: dict, out: Path) -> list[Path]:
    """Write ``metrics/<model>.json`` for every model and, with labels, the plot CSVs
    ``plots/knn_vs_k/<model>.csv`` and ``plots/accuracy_vs_params.csv``; returns the files."""
    out = Path(out)
    written = []
    for m in report_models(metrics):
        path = out / MODEL_METRICS_DIR / f"{m}.json"
        write_json(path, flat_model_metrics(metrics, m))
        written.append(path)
    for m in metrics.get("knn") or {}:
        written.append(out / PLOTS_DIR / KNN_VS_K_DIR / f"{m}.csv")
        write_text(written[-1], _csv(["k", "knn_top1"], knn_vs_k_rows(metrics, m)))
    if metrics.get("knn"):
        acc = accuracy_vs_params_rows(metrics)
        cols = ["model", "params_m", "knn_k", "knn_top1", "linear_cls_top1"]
        written.append(out / PLOTS_DIR / ACC_VS_PARAMS_CSV)
        write_text(written[-1], _csv(cols, [[r[c] for c in cols] for r in acc]))
    return written
