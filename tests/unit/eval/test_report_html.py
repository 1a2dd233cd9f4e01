"""``report.html``: well-formed, self-contained, every model and section, strings escaped."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from ssl_core.eval.report_html import report_html, report_images
from ssl_core.eval.report_md import NO_LABELS

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
SVG_LEAF = {"rect", "line", "circle", "path"}  # self-closed ``<x .../>`` in inline SVG
MODELS = ("raw_pixels", "random_init_tiny", "teacher", "student_<script>alert(1)</script>")


def _health(rank: float, tokens: bool) -> dict:
    h = {"images": 80, "effective_rank": rank, "uniformity": -0.1234}
    if tokens:
        h["tokens"] = {
            "patch_norm_median": 14.47,
            "patch_norm_p99": 16.49,
            "patch_norm_max": 17.76,
            "outlier_share": 0.0123,
            "num_register_tokens": 4,
            "register_norm_median": 0.29,
            "n_tokens": 1280,
        }
    return h


def _metrics() -> dict:
    """Same keys as the evaluate stage's ``metrics`` (see a real ``metrics.json``)."""
    raw, rnd, teacher, student = MODELS
    knn = {
        raw: {"10": 0.65, "20": 0.651, "200": 0.64},
        rnd: {"10": 0.49, "20": 0.47, "200": 0.36},
        teacher: {"10": 0.5, "20": 0.472, "200": 0.36},
        student: {"10": 0.47, "20": 0.46, "200": 0.3},
    }
    lin = {m: {"cls": {"best_lr": 0.03, "top1": 0.45}} for m in MODELS}
    lin[teacher] = {"cls": {"top1": 0.49}, "cls4_avgpool": {"best_lr": 0.01, "top1": 0.537}}
    ret = {m: {"mAP": 0.306, "recall@1": 0.47, "recall@5": 0.73} for m in MODELS}
    ret[teacher] = {"mAP": 0.5329, "recall@1": 0.681, "recall@5": 0.912}
    cost = {
        m: {"params_m": 2.7047, "gflops_per_image": 0.1144, "images_per_s": 338.6} for m in MODELS
    }
    cost[raw] = {"params_m": 0.0, "gflops_per_image": 0.0, "images_per_s": 293912.3}
    health = {m: _health(9.317, m != raw) for m in MODELS}
    balance = {"entropy_normalised": 0.8297, "gini": 0.4851, "largest_share": 0.2154}
    after = {"entropy_normalised": 0.9106, "gini": 0.3458, "largest_share": 0.225}
    dist = {"counts": [63, 50, 7], "entropy_normalised": 0.9052, "max_min_ratio": float("inf")}
    return {
        "labels": True,
        "eval_set": {"bank": 200, "query": 100, "classes": 10},
        "knn": knn,
        "knn_temperature": 0.07,
        "linear": lin,
        "retrieval": ret,
        "feature_health": health,
        "cost": cost,
        "cluster_balance": {"level 0 (12 clusters)": {"before": balance, "after": after}},
        "curation": {
            "class_distribution": {"raw_pool": dist, "curated": {**dist, "max_min_ratio": 4.25}},
            "planted_duplicates": {"exact_duplicate": {"planted_groups": 10, "resolved": 9}},
            "broken_files": {"planted": 4, "quarantined": 3},
        },
    }


def _no_labels() -> dict:
    m = copy.deepcopy(_metrics())
    m.update(labels=False, eval_set=None, knn={}, linear={}, retrieval={}, curation=None)
    return m


class _Checker(HTMLParser):
    """Tag balance check: every opened (non-void) element closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID | SVG_LEAF:
            self.errors.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(doc: str) -> _Checker:
    p = _Checker()
    p.feed(doc)
    p.close()
    assert p.errors == [] and p.stack == [], (p.errors, p.stack)
    return p


@pytest.fixture
def pngs(tmp_path: Path) -> dict[str, Path]:
    for name, colour in (("cluster_sizes.png", "red"), ("cluster_samples.png", "blue")):
        Image.new("RGB", (8, 6), colour).save(tmp_path / name)
    return report_images(tmp_path)


def test_report_images_known_plots_in_order(pngs: dict[str, Path], tmp_path: Path) -> None:
    assert list(pngs) == ["cluster_sizes.png", "cluster_samples.png"]  # no class_distribution
    (tmp_path / "class_distribution.png").write_bytes((tmp_path / "cluster_sizes.png").read_bytes())
    assert list(report_images(tmp_path))[-1] == "class_distribution.png"


def test_with_labels_every_model_and_section(pngs: dict[str, Path]) -> None:
    doc = report_html(_metrics(), pngs)
    p = _parse(doc)
    text = " ".join(p.text)
    for m in MODELS:
        assert m in text  # unescaped by the parser: the name as written
    # one number from each section
    for number in ("65.1 %", "53.7 %", "91.2 %", "0.533", "2.70", "0.114", "293,912", "9.3"):
        assert number in text, number  # kNN k=20, linear x4, recall@5, mAP, cost, eff. rank
    assert "-0.12" in text and "1.23 %" in text  # uniformity, outlier-token share
    assert "0.830 → 0.911" in text and "0.485 → 0.346" in text  # cluster balance
    assert "14.5 / 16.5 / 17.8" in text and "4 (0.3)" in text  # token norms, registers
    assert "0.905" in text and "∞" in text and "63, 50, 7" in text  # class balance
    assert "exact_duplicate: 9/10" in text and "3 / 4" in text
    assert "T=0.07" in text and "chance 10.0 %" in text
    assert NO_LABELS not in text
    # the charts: two inline SVGs, bars for every model x k, one point per model
    tags = [t for t, _ in p.tags]
    assert tags.count("svg") == 2 and tags.count("circle") == len(MODELS)
    assert "kNN top-1 vs k" in text and "Accuracy vs parameters" in text
    bars = [a for t, a in p.tags if t == "rect" and "height" in a and a.get("width") != "10"]
    assert len(bars) == len(MODELS) * 3
    assert 'class="best"' in doc


def test_without_labels_box_and_label_free_sections(pngs: dict[str, Path]) -> None:
    doc = report_html(_no_labels(), pngs)
    text = " ".join(_parse(doc).text)
    assert NO_LABELS in text and 'id="no-labels"' in doc
    for m in MODELS:
        assert m in text
    assert "kNN k=" not in text and "<svg" not in doc and "recall@1" not in text
    assert "Class balance" not in text
    assert "0.830 → 0.911" in text and "9.3" in text and "293,912" in text


def test_images_embedded_and_nothing_external(pngs: dict[str, Path]) -> None:
    for metrics in (_metrics(), _no_labels()):
        doc = report_html(metrics, pngs)
        assert doc.count('src="data:image/png;base64,') == 2
        assert "cluster_sizes.png" in doc and "cluster_samples.png" in doc
        assert "http://" not in doc and "https://" not in doc
        assert "<script" not in doc.lower() and "<link" not in doc.lower()
        for attr in re.findall(r'\b(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', doc):
            assert attr.startswith("data:image/png;base64,"), attr[:40]
        assert "figcaption" in doc


def test_missing_image_skipped(tmp_path: Path) -> None:
    doc = report_html(_no_labels(), {"cluster_sizes.png": tmp_path / "absent.png"})
    _parse(doc)
    assert "data:image" not in doc and "<h2>Plots</h2>" not in doc


def test_model_name_escaped(pngs: dict[str, Path]) -> None:
    doc = report_html(_metrics(), pngs)
    assert "<script>" not in doc
    assert "student_&lt;script&gt;alert(1)&lt;/script&gt;" in doc
