"""The GX suites that guard each hand-off of the graph.

Each ``*_suite`` function turns a stage's outputs into :class:`Batch` objects (frames plus
expectations) and returns the validation result. The same functions run in DVC check stages
and in Dagster's blocking asset checks (both through ``sslops check <name>``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ssl_core.config import Params
from ssl_core.quality.gx_adapter import Batch, SuiteResult, expectations, validate
from ssl_core.stages.names import DISTILL_TEACHER

MANIFEST_COLUMNS = [
    "path",
    "sha256",
    "bytes",
    "width",
    "height",
    "mode",
    "format",
    "status",
    "reason",
    "duplicate_of",
]


def manifest_suite(manifest: pl.DataFrame, params: Params) -> SuiteResult:
    g, cfg = expectations(), params.ingest
    ok = manifest.filter(pl.col("status") == "ok")
    kept = ok.filter(pl.col("duplicate_of").is_null())
    rate = manifest.select(
        (pl.col("status") == "quarantined").cast(pl.Float64).alias("quarantined")
    )
    return validate(
        "manifest",
        [
            Batch(
                "manifest",
                manifest,
                [
                    g.ExpectTableColumnsToMatchSet(column_set=MANIFEST_COLUMNS, exact_match=True),
                    g.ExpectTableRowCountToBeBetween(min_value=1),
                    g.ExpectColumnValuesToBeUnique(column="path"),
                    g.ExpectColumnValuesToNotBeNull(column="path"),
                    g.ExpectColumnValuesToBeInSet(column="status", value_set=["ok", "quarantined"]),
                ],
            ),
            Batch(
                "ok_rows",
                ok,
                [
                    g.ExpectTableRowCountToBeBetween(min_value=1),
                    g.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
                    g.ExpectColumnValuesToBeBetween(
                        column="width", min_value=cfg.min_side, max_value=cfg.max_side
                    ),
                    g.ExpectColumnValuesToBeBetween(
                        column="height", min_value=cfg.min_side, max_value=cfg.max_side
                    ),
                    g.ExpectColumnValuesToBeBetween(
                        column="bytes", min_value=1, max_value=cfg.max_bytes
                    ),
                    g.ExpectColumnValuesToBeNull(column="reason"),
                ],
            ),
            Batch("kept_rows", kept, [g.ExpectColumnValuesToBeUnique(column="sha256")]),
            Batch(
                "quarantine_rate",
                rate,
                [
                    g.ExpectColumnMeanToBeBetween(
                        column="quarantined", min_value=0.0, max_value=cfg.max_quarantine_rate
                    ),
                ],
            ),
        ],
    )


def dedup_suite(
    kept: pl.DataFrame,
    removed: pl.DataFrame,
    eval_ids: pl.DataFrame,
    n_ok_input: int,
    params: Params,
) -> SuiteResult:
    g, cfg = expectations(), params.dedup
    frac = pl.DataFrame({"kept_fraction": [kept.height / max(n_ok_input, 1)]})
    eval_shas = kept.filter(pl.col("sha256").is_in(eval_ids["sha256"].implode())).select("path")
    kept_checks = [
        g.ExpectTableRowCountToBeBetween(min_value=1),
        g.ExpectColumnValuesToBeUnique(column="sha256"),
        g.ExpectColumnValuesToBeUnique(column="path"),
    ]
    if eval_ids.height:  # without labels there is no eval set to leak into
        kept_checks.append(
            g.ExpectColumnMaxToBeBetween(
                column="nearest_eval_sim", max_value=cfg.decontam_threshold, strict_max=True
            )
        )
    return validate(
        "dedup",
        [
            Batch("kept", kept, kept_checks),
            Batch(
                "kept_fraction",
                frac,
                [
                    g.ExpectColumnValuesToBeBetween(
                        column="kept_fraction", min_value=cfg.min_kept_fraction, max_value=1.0
                    ),
                ],
            ),
            Batch("eval_byte_copies_in_kept", eval_shas, [g.ExpectTableRowCountToEqual(value=0)]),
            Batch(
                "removed",
                removed,
                [
                    g.ExpectColumnValuesToBeInSet(
                        column="reason",
                        value_set=["exact_duplicate", "near_duplicate", "eval_contamination"],
                    ),
                    g.ExpectColumnValuesToNotBeNull(column="nearest_path"),
                ],
            ),
        ],
    )


def curated_suite(
    curated: pl.DataFrame, manifest: pl.DataFrame, lineage_stats: dict, params: Params
) -> SuiteResult:
    g = expectations()
    levels = lineage_stats["levels"]  # as curated (``auto`` resolved)
    top = f"cluster_l{len(levels) - 1}"
    pool = Path(params.paths.pool)
    joined = curated.join(manifest.select("path", "status"), on="path", how="left")
    readable = curated.select(
        pl.col("path")
        .map_elements(lambda p: (pool / p).is_file() or "::" in p, return_dtype=pl.Boolean)
        .alias("readable")
    )
    counts = curated.group_by(top).len().rename({"len": "count"})
    n_top = levels[-1]
    c = np.bincount(curated[top].to_numpy(), minlength=n_top).astype(np.float64)
    from ssl_core.stages.curate import normalised_entropy

    ent = pl.DataFrame({"entropy": [normalised_entropy(c)]})
    cap = lineage_stats["top_level_cap"]
    return validate(
        "curated",
        [
            Batch(
                "curated",
                curated,
                [
                    g.ExpectTableRowCountToEqual(value=lineage_stats["target_size"]),
                    g.ExpectColumnValuesToBeUnique(column="path"),
                    g.ExpectColumnValuesToBeUnique(column="sha256"),
                ],
            ),
            Batch(
                "status_in_manifest",
                joined,
                [
                    g.ExpectColumnValuesToBeInSet(column="status", value_set=["ok"]),
                    g.ExpectColumnValuesToNotBeNull(column="status"),
                ],
            ),
            Batch(
                "readable",
                readable,
                [g.ExpectColumnValuesToBeInSet(column="readable", value_set=[True])],
            ),
            # the binary-searched cap, plus one for the remainder spread to make the total exact
            Batch(
                "top_level_counts",
                counts,
                [
                    g.ExpectColumnMaxToBeBetween(column="count", max_value=cap + 1),
                ],
            ),
            Batch(
                "top_level_entropy",
                ent,
                [
                    g.ExpectColumnValuesToBeBetween(
                        column="entropy", min_value=params.curate.min_cluster_entropy
                    ),
                ],
            ),
        ],
    )


def training_suite(summary: dict, name: str) -> SuiteResult:
    """Loss finite, no collapse (feature std, teacher entropy), kNN better than chance (when
    the run has labels; without them the kNN probe is skipped, not faked)."""
    g = expectations()
    row = pl.DataFrame(
        [
            {
                "final_loss": summary["final_loss"],
                "feature_std": summary["feature_std"],
                "knn_top1": summary["knn_top1"],
                "chance": summary["chance"],
            }
        ]
    )
    checks = [
        g.ExpectColumnValuesToNotBeNull(column="final_loss"),
        g.ExpectColumnValuesToBeBetween(column="final_loss", min_value=-1e6, max_value=1e6),
        g.ExpectColumnValuesToBeBetween(column="feature_std", min_value=1e-4),
    ]
    if summary.get("knn_probed", True):
        checks.append(
            g.ExpectColumnPairValuesAToBeGreaterThanB(column_A="knn_top1", column_B="chance")
        )
    return validate(name, [Batch("summary", row, checks)])


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _numbers(obj: Any, prefix: str = "") -> list[tuple[str, float | None]]:
    """Every numeric leaf of a nested metrics dict as (dotted name, value); histograms skipped."""
    out: list[tuple[str, float | None]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "hist":
                out += _numbers(v, f"{prefix}{k}.")
    elif isinstance(obj, bool) or obj is None:
        pass
    elif isinstance(obj, int | float):
        out.append((prefix.rstrip("."), float(obj)))
    return out


GATE_K = "20"  # the kNN k the student gate compares (the smallest k when 20 was not measured)


def _students_vs_teacher(
    metrics: dict, students: list[str], reference: str
) -> tuple[str, pl.DataFrame]:
    """(k, one row per student: its kNN top-1 over the ``reference`` model's, the teacher it was
    distilled from; 0 when not measured)."""
    teacher = metrics["knn"].get(reference, {})
    k = GATE_K if GATE_K in teacher else min(teacher, key=int, default=GATE_K)
    ref = teacher.get(k, 0.0)
    rows = [
        {
            "student": m,
            "fraction_of_teacher": metrics["knn"].get(m, {}).get(k, 0.0) / max(ref, 1e-9),
        }
        for m in students
    ]
    schema = {"student": pl.String, "fraction_of_teacher": pl.Float64}
    return k, pl.DataFrame(rows, schema=schema)


# The per-model numbers (``<reports_dir>/metrics/<model>.json``, written by
# ssl_core/eval/model_metrics.py) every model must have; the gate states the contract itself.
MODEL_METRICS_ALWAYS = ("params_m", "gflops_per_image", "images_per_s", "effective_rank")
MODEL_METRICS_ALWAYS += ("uniformity",)
MODEL_METRICS_LABELLED = ("linear_cls_top1", "recall_at_1", "recall_at_5", "map")


def required_model_metrics(arch: str, labels: bool, ks: list[int]) -> list[str]:
    """Keys a model's metrics file must hold: cost and feature health always, patch-token
    outliers for backbones (``arch`` vit/xcit, not pixels); with labels kNN top-1 per k, linear
    probes (DINOv2's cls4+avgpool input for backbones) and retrieval."""
    backbone = arch != "pixels"
    keys = [*MODEL_METRICS_ALWAYS, *(["outlier_share"] if backbone else [])]
    if labels:
        keys += [f"knn_top1_k{k}" for k in ks] + list(MODEL_METRICS_LABELLED)
        keys += ["linear_cls4_avgpool_top1"] if backbone else []
    return keys


def _model_metric_rows(metrics: dict, files: dict[str, dict], expected: list[str], ks: list[int]):
    """One row per (model, required metric): whether its file has it as a number, not NaN."""
    info = metrics.get("models") or {}
    rows = []
    for m in dict.fromkeys([*expected, *info]):
        arch = (info.get(m) or {}).get("arch", "vit")
        for key in required_model_metrics(arch, bool(metrics.get("labels")), ks):
            v = (files.get(m) or {}).get(key)
            num = isinstance(v, int | float) and not isinstance(v, bool)
            rows.append({"model": m, "metric": key, "present": num, "not_nan": num and v == v})
    schema = {"model": pl.String, "metric": pl.String, "present": pl.Boolean, "not_nan": pl.Boolean}
    return pl.DataFrame(rows, schema=schema)


def report_suite(
    metrics: dict, params: Params, model_files: dict[str, dict] | None = None
) -> SuiteResult:
    """The evaluation gate: every model measured, no NaN metric (infinity is a real value of
    some ratios, e.g. max/min class counts with an empty class), every model's metrics file
    (``model_files``: model -> its ``metrics/<model>.json``; None skips this) has every required
    metric as a number, not NaN, and (with labels) every student keeps
    ``eval.min_student_fraction`` of the teacher's kNN top-1."""
    g = expectations()
    models = ["teacher", *(f"student_{s}" for s in params.distill.students)]
    models += [DISTILL_TEACHER] if params.distill.teacher else []
    models += [f"checkpoint_{n}" for n in params.eval.checkpoints]
    present = pl.DataFrame(
        {"model": models, "measured": [m in metrics.get("feature_health", {}) for m in models]}
    )
    nums = pl.DataFrame(
        _numbers(metrics), schema={"metric": pl.String, "value": pl.Float64}, orient="row"
    ).with_columns(pl.col("value").is_not_nan().fill_null(False).alias("not_nan"))
    batches = [
        Batch(
            "models", present, [g.ExpectColumnValuesToBeInSet(column="measured", value_set=[True])]
        ),
        Batch(
            "numbers",
            nums,
            [
                g.ExpectTableRowCountToBeBetween(min_value=1),
                g.ExpectColumnValuesToBeInSet(column="not_nan", value_set=[True]),
            ],
        ),
    ]
    if model_files is not None:
        rows = _model_metric_rows(metrics, model_files, models, list(params.eval.ks))
        batches.append(
            Batch(
                "model_metrics",
                rows,
                [
                    g.ExpectColumnValuesToBeInSet(column="present", value_set=[True]),
                    g.ExpectColumnValuesToBeInSet(column="not_nan", value_set=[True]),
                ],
            )
        )
    if metrics.get("labels"):
        students = [m for m in models if m.startswith("student_")]
        reference = DISTILL_TEACHER if params.distill.teacher else "teacher"
        k, rows = _students_vs_teacher(metrics, students, reference)
        batches.append(
            Batch(
                f"students_vs_teacher_knn_k{k}",
                rows,
                [
                    g.ExpectColumnValuesToBeBetween(
                        column="fraction_of_teacher", min_value=params.eval.min_student_fraction
                    ),
                ],
            )
        )
    return validate("report", batches)
