"""Per-model metric files, plot CSVs, the model figures and their place in report.md/html."""

from __future__ import annotations

import csv
import json
import math

import torch

from ssl_core.curation.embed import BackboneEmbedder, PixelEmbedder
from ssl_core.eval.feature_health import token_norm_stats
from ssl_core.eval.model_metrics import flat_model_metrics, write_model_metrics
from ssl_core.eval.report_figures import report_figures
from ssl_core.eval.report_html import report_html, report_images
from ssl_core.eval.report_md import report_md
from ssl_core.models.vit import VisionTransformer, ViTConfig

MODELS = ("raw_pixels", "teacher", "student_a", "student_a_noreg")


def _metrics(tokens: dict | None = None) -> dict:
    tok = {"outlier_share": 0.01, "patch_norm_median": 5.0, "patch_norm_max": 30.0}
    tok |= {"num_register_tokens": 0, "register_norm_median": None, "hist": None}
    return {
        "labels": True,
        "eval_set": {"bank": 10, "query": 10, "classes": 10},
        "knn_temperature": 0.07,
        "knn": {m: {"10": (5 + i) / 10, "20": (4 + i) / 10} for i, m in enumerate(MODELS)},
        "linear": {
            m: {"cls": {"top1": 0.6}, "cls4_avgpool": {"top1": 0.7}}
            if m != "raw_pixels"
            else {"cls": {"top1": 0.6}}
            for m in MODELS
        },
        "retrieval": {m: {"recall@1": 0.3, "recall@5": 0.6, "mAP": 0.2} for m in MODELS},
        "cost": {
            m: {"params_m": float(i), "gflops_per_image": 0.1, "images_per_s": 100.0}
            for i, m in enumerate(MODELS)
        },
        "feature_health": {
            m: {"images": 6, "effective_rank": 5.0, "uniformity": -1.0}
            | ({} if m == "raw_pixels" else {"tokens": (tokens or {}).get(m, tok)})
            for m in MODELS
        },
        "cluster_balance": {},
        "curation": None,
    }


def test_flat_metrics_of_a_backbone_and_of_pixels():
    m = _metrics()
    assert flat_model_metrics(m, "teacher") == {
        "knn_top1_k10": 0.6,
        "knn_top1_k20": 0.5,
        "linear_cls_top1": 0.6,
        "linear_cls4_avgpool_top1": 0.7,
        "recall_at_1": 0.3,
        "recall_at_5": 0.6,
        "map": 0.2,
        "params_m": 1.0,
        "gflops_per_image": 0.1,
        "images_per_s": 100.0,
        "effective_rank": 5.0,
        "uniformity": -1.0,
        "outlier_share": 0.01,
    }
    pixels = flat_model_metrics(m, "raw_pixels")
    assert "outlier_share" not in pixels and "linear_cls4_avgpool_top1" not in pixels
    m["knn"]["teacher"]["20"] = float("nan")  # kept, so the gate can see it
    assert math.isnan(flat_model_metrics(m, "teacher")["knn_top1_k20"])


def test_metric_files_and_plot_csvs(tmp_path):
    written = write_model_metrics(_metrics(), tmp_path)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    assert names == sorted(
        [f"metrics/{m}.json" for m in MODELS]
        + [f"plots/knn_vs_k/{m}.csv" for m in MODELS]
        + ["plots/accuracy_vs_params.csv"]
    )
    student = json.loads((tmp_path / "metrics/student_a.json").read_text())
    assert student["knn_top1_k20"] == 0.6 and student["params_m"] == 2.0
    assert all(isinstance(v, float) for v in student.values())  # flat numbers only
    rows = list(csv.DictReader((tmp_path / "plots/knn_vs_k/teacher.csv").open()))
    assert rows == [{"k": "10", "knn_top1": "0.6"}, {"k": "20", "knn_top1": "0.5"}]
    acc = list(csv.DictReader((tmp_path / "plots/accuracy_vs_params.csv").open()))
    assert [r["model"] for r in acc] == list(MODELS)
    assert acc[1] == {
        "model": "teacher",
        "params_m": "1.0",
        "knn_k": "20",
        "knn_top1": "0.5",
        "linear_cls_top1": "0.6",
    }
    # without labels: metric files only
    nolab = {**_metrics(), "labels": False, "knn": {}, "linear": {}, "retrieval": {}}
    assert all("metrics/" in str(p) for p in write_model_metrics(nolab, tmp_path / "n"))


def _vit(regs: int) -> VisionTransformer:
    torch.manual_seed(0)
    cfg = ViTConfig(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)
    return VisionTransformer(ViTConfig(**{**cfg.to_dict(), "num_register_tokens": regs})).eval()


def test_figures_twins_and_report_pages(tmp_path):
    nets = {"teacher": _vit(4), "student_a": _vit(4), "student_a_noreg": _vit(0)}
    images = torch.rand(6, 3, 16, 16)
    tokens = {m: token_norm_stats(n, images) for m, n in nets.items()}
    metrics = _metrics(tokens)
    metrics["models"] = {
        m: {"role": "student", "config": n.config.to_dict()} for m, n in nets.items()
    }
    metrics["models"]["teacher"]["role"] = "teacher"
    metrics["register_twins"] = {"pairs": [["student_a", "student_a_noreg"]], "hint": None}
    models = {
        "raw_pixels": PixelEmbedder(16),
        **{m: BackboneEmbedder(n, 16, m) for m, n in nets.items()},
    }
    figures = report_figures(metrics, models, images, tmp_path)
    # teacher and student_a have equal configs and both have registers: not twins
    assert set(figures) == {
        "token_norms.png",
        "accuracy_vs_params.png",
        "knn_vs_k.png",
        "register_twins_student_a_vs_student_a_noreg.png",
        *(f"attention_{m}.png" for m in nets),
    }
    assert all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in figures)
    md = report_md(metrics, figures)
    assert "## Registers: with and without, side by side" in md
    assert "| student_a_noreg | 0 | 70.0 % |" in md
    assert "![" in md and "(attention_teacher.png)" in md
    page = report_html(metrics, report_images(tmp_path, figures), figures)
    assert page.count('src="data:image/png;base64,') == len(figures)
    assert 'class="twins"' in page and "attention_student_a_noreg.png" in page
    # no twin: the hint instead
    metrics["register_twins"] = {"pairs": [], "hint": "add `tiny_student_noreg`"}
    assert "add `tiny_student_noreg`" in report_md(metrics, {})
    assert 'id="register-twins"' in report_html(metrics, {})
