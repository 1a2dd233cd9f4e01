"""``report.html`` opened in headless Chromium: it renders (screenshot) and has the model table.

Needs Debian's ``chromium`` (``make data-check`` installs it as root); skipped without it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_core.eval.report_html import report_html, report_images

WIDTH, HEIGHT = 1280, 2400
MODELS = ("raw_pixels", "random_init_tiny", "teacher", "student_tiny_student")
CHROMIUM = next((b for b in ("chromium", "chromium-browser") if shutil.which(b)), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary on PATH (apt-get install -y chromium, or `make data-check` as root)",
)


def _metrics() -> dict:
    """A small fake with the evaluate stage's keys, labels present."""
    accs = (0.65, 0.47, 0.5, 0.46)
    params = (0.0, 2.7, 2.7, 0.82)
    balance = {"entropy_normalised": 0.83, "gini": 0.49, "largest_share": 0.22}
    return {
        "labels": True,
        "eval_set": {"bank": 200, "query": 100, "classes": 10},
        "knn": {m: {"10": a, "20": a - 0.02} for m, a in zip(MODELS, accs, strict=True)},
        "knn_temperature": 0.07,
        "linear": {m: {"cls": {"top1": a}} for m, a in zip(MODELS, accs, strict=True)},
        "retrieval": {m: {"recall@1": 0.4, "recall@5": 0.7, "mAP": 0.3} for m in MODELS},
        "feature_health": {
            m: {"images": 80, "effective_rank": 9.3, "uniformity": -0.2} for m in MODELS
        },
        "cost": {
            m: {"params_m": p, "gflops_per_image": p / 20, "images_per_s": 300.0}
            for m, p in zip(MODELS, params, strict=True)
        },
        "cluster_balance": {"level 0 (4 clusters)": {"before": balance, "after": balance}},
        "curation": None,
    }


def _chromium(*args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture
def report(tmp_path: Path) -> Path:
    Image.new("RGB", (400, 150), (255, 0, 0)).save(tmp_path / "cluster_sizes.png")
    Image.new("RGB", (400, 150), (0, 0, 255)).save(tmp_path / "cluster_samples.png")
    path = tmp_path / "report.html"
    path.write_text(report_html(_metrics(), report_images(tmp_path)), encoding="utf-8")
    return path


def test_report_renders_in_chromium(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    profile = f"--user-data-dir={tmp_path / 'chromium-profile'}"
    r = _chromium(
        profile, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", report.as_uri()
    )
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (WIDTH, HEIGHT)
        px = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    assert (px != px[0]).any()  # not a single colour
    # the embedded red PNG (a data URI) was decoded and drawn
    red = int(((px[:, 0] > 240) & (px[:, 1] < 15) & (px[:, 2] < 15)).sum())
    assert red > 10_000, red


def test_report_dom_has_model_table(report: Path, tmp_path: Path) -> None:
    r = _chromium(f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", report.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert '<table class="models">' in dom and "Models: every measure" in dom
    for m in MODELS:
        assert f"<td>{m}</td>" in dom
    assert "kNN k=20" in dom and "<svg" in dom and "data:image/png;base64," in dom
