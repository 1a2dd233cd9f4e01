"""``report.html`` from the evaluation metrics: one self-contained page a team decides from.

Everything is inline: CSS in a ``<style>`` block, the PNG plots as base64 ``data:`` URIs and
the charts as inline SVG drawn from the metrics, so the file can be mailed or attached as is
(no external resource, no JavaScript). Every string taken from the metrics is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable
from pathlib import Path

from ssl_core.eval.provenance import PROVENANCE_HEADER, provenance_rows
from ssl_core.eval.report_md import NO_LABELS, TWIN_HEADER, twin_rows

# The plots the evaluate stage writes, in page order, with their captions.
CAPTIONS = {
    "cluster_sizes.png": "Cluster sizes before / after curation, per clustering level.",
    "cluster_samples.png": "Curated images per top-level cluster (largest clusters first).",
    "class_distribution.png": "Class counts of the raw pool, a random subset of the curated "
    "size, and the curated set.",
}
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1240px;padding:0 1rem;color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.2rem .35rem;text-align:right}
th{background:#f3f3f3}td{white-space:nowrap}td:first-child,th:first-child{text-align:left}
.scroll{overflow-x:auto}
td.best{font-weight:700;background:#eef6ee}
.note{background:#fff4e5;border:1px solid #f0b060;border-radius:4px;padding:.6rem .9rem}
.muted{color:#666;font-size:.9rem}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{color:#555;font-size:.9rem}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}
svg text{font-family:inherit;font-size:11px}
"""
DASH = "–"


def _e(value: object) -> str:
    """HTML-escape any value's ``str`` (quotes included)."""
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, spec: str, scale: float = 1.0, unit: str = "") -> str:
    """Format a number (``None``/NaN as a dash, infinity as ∞), escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return _e(f"{value * scale:{spec}}{unit}")


def _pct(value: float | None) -> str:
    return _fmt(value, ".1f", 100.0, " %")


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table from already-escaped header and cell strings; a cell starting with ``<td``
    is taken as a whole cell (for highlighted values)."""
    attr = f' class="{cls}"' if cls else ""
    out = [
        f'<div class="scroll"><table{attr}><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead>"
    ]
    out.append("<tbody>")
    for row in rows:
        cells = (c if c.startswith("<td") else f"<td>{c}</td>" for c in row)
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join([*out, "</tbody></table></div>"])


def _models(metrics: dict) -> list[str]:
    """Every model named in any per-model section, in first-seen order."""
    seen: dict[str, None] = {}
    for key in ("knn", "linear", "retrieval", "cost", "feature_health"):
        seen.update(dict.fromkeys(metrics.get(key) or {}))
    return list(seen)


def _ks(metrics: dict) -> list[int]:
    return sorted({int(k) for accs in (metrics.get("knn") or {}).values() for k in accs})


MODEL = object()  # placeholder for the model name in a metrics path


def _get(metrics: dict, path: tuple, model: str) -> object:
    """``metrics[a][b]...`` along ``path`` (``MODEL`` replaced by ``model``), None if absent."""
    node: object = metrics
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(model if key is MODEL else key)
    return node


def _model_columns(metrics: dict) -> list[tuple[str, tuple, str]]:
    """(header, metrics path, kind) for each measure present in the metrics; kind is 'acc'
    (percent, best in bold), 'map' (3 decimals, best in bold), 'share' (percent) or a format."""
    cols = [(f"kNN k={k}", ("knn", MODEL, str(k)), "acc") for k in _ks(metrics)]
    if metrics.get("linear"):
        cols.append(("linear CLS", ("linear", MODEL, "cls", "top1"), "acc"))
        cols.append(("linear CLS x4 + avgpool", ("linear", MODEL, "cls4_avgpool", "top1"), "acc"))
    if metrics.get("retrieval"):
        cols.append(("recall@1", ("retrieval", MODEL, "recall@1"), "acc"))
        cols.append(("recall@5", ("retrieval", MODEL, "recall@5"), "acc"))
        cols.append(("mAP", ("retrieval", MODEL, "mAP"), "map"))
    if metrics.get("cost"):
        cols.append(("params (M)", ("cost", MODEL, "params_m"), ".2f"))
        cols.append(("GFLOPs / img", ("cost", MODEL, "gflops_per_image"), ".3f"))
        cols.append(("img/s", ("cost", MODEL, "images_per_s"), ",.0f"))
    if metrics.get("feature_health"):
        cols.append(("eff. rank", ("feature_health", MODEL, "effective_rank"), ".1f"))
        cols.append(("uniformity", ("feature_health", MODEL, "uniformity"), ".2f"))
        out = ("feature_health", MODEL, "tokens", "outlier_share")
        cols.append(("outlier tokens", out, "share"))
    return cols


def _is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: object, kind: str, best: float | None) -> str:
    """One escaped cell; a whole ``<td class="best">`` when it is the column's best accuracy."""
    num = float(value) if _is_num(value) else None  # type: ignore[arg-type]
    if kind == "acc":
        text = _pct(num)
    elif kind == "map":
        text = _fmt(num, ".3f")
    elif kind == "share":
        text = _fmt(num, ".2f", 100.0, " %")
    else:
        text = _fmt(num, kind)
    if kind in ("acc", "map") and num is not None and num == best:
        return f'<td class="best">{text}</td>'
    return text


def _model_table(metrics: dict) -> str:
    """One row per model, one column per measure present; best accuracy per column in bold."""
    models, cols, best = _models(metrics), [], {}
    for head, path, kind in _model_columns(metrics):
        vals = [float(v) for v in (_get(metrics, path, m) for m in models) if _is_num(v)]
        if vals:  # a measure no model has is left out
            cols.append((head, path, kind))
            best[head] = max(vals) if max(vals) > min(vals) else None  # no bold on a full tie
    rows = [
        [_e(m), *(_cell(_get(metrics, path, m), kind, best[h]) for h, path, kind in cols)]
        for m in models
    ]
    note = "Accuracies and recalls on the eval query set; best per column in bold. " * bool(
        metrics.get("labels")
    )
    note += (
        "Cost: parameters, GFLOPs per image, images/s on this machine. Feature health "
        "(label-free): effective rank, uniformity, share of patch tokens above 4x the median "
        "norm."
    )
    note = f'<p class="muted">{note}</p>'
    head = ["model", *(_e(h) for h, _, _ in cols)]
    return "<h2>Models: every measure</h2>\n" + _table(head, rows, "models") + "\n" + note


def _svg_frame(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">'
        f"<title>{_e(title)}</title>"
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-weight="bold">{_e(title)}'
        "</text>" + "".join(body) + "</svg>"
    )


def _y_axis(x0: float, y0: float, w: float, h: float, label: str) -> list[str]:
    """Horizontal grid lines and tick labels for 0..100 %, plus the axis label."""
    out = []
    for t in (0, 25, 50, 75, 100):
        y = y0 + h - h * t / 100
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{t}</text>')
    out.append(
        f'<text transform="translate({x0 - 30},{y0 + h / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{_e(label)}</text>'
    )
    return out


def _legend(models: list[str], x: float, y: float) -> list[str]:
    out = []
    for i, m in enumerate(models):
        c = PALETTE[i % len(PALETTE)]
        yy = y + 16 * i
        out.append(f'<rect x="{x}" y="{yy}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{x + 14}" y="{yy + 9}">{_e(m)}</text>')
    return out


def _knn_chart(metrics: dict) -> str:
    """Grouped bars: kNN top-1 (%) per k, one bar per model."""
    knn, ks = metrics.get("knn") or {}, _ks(metrics)
    models = list(knn)
    if not models or not ks:
        return ""
    x0, y0, w, h = 50.0, 30.0, 360.0, 220.0
    body = _y_axis(x0, y0, w, h, "kNN top-1 (%)")
    gw = w / len(ks)
    bw = gw * 0.8 / len(models)
    for gi, k in enumerate(ks):
        gx = x0 + gi * gw + gw * 0.1
        for mi, m in enumerate(models):
            v = knn[m].get(str(k))
            if not isinstance(v, int | float) or math.isnan(v):
                continue
            bh = h * max(0.0, min(1.0, float(v)))
            c = PALETTE[mi % len(PALETTE)]
            body.append(
                f'<rect x="{gx + mi * bw:.1f}" y="{y0 + h - bh:.1f}" width="{bw:.1f}" '
                f'height="{bh:.1f}" fill="{c}"><title>{_e(m)}, k={k}: {_pct(v)}</title></rect>'
            )
        body.append(
            f'<text x="{gx + gw * 0.4:.1f}" y="{y0 + h + 14}" text-anchor="middle">k={k}</text>'
        )
    body += _legend(models, x0 + w + 15, y0)
    return _svg_frame(560, int(y0 + h + 40), "kNN top-1 vs k", body)


def _acc_k(metrics: dict) -> str | None:
    ks = _ks(metrics)
    return "20" if 20 in ks else (str(ks[0]) if ks else None)


def _acc_params_chart(metrics: dict) -> str:
    """Points: kNN top-1 (k=20, else the first k) against parameters (M), one per model."""
    knn, cost, k = metrics.get("knn") or {}, metrics.get("cost") or {}, _acc_k(metrics)
    pts = [
        (m, float(cost[m]["params_m"]), float(knn[m][k]))
        for m in knn
        if k in knn[m] and isinstance((cost.get(m) or {}).get("params_m"), int | float)
    ]
    if not pts:
        return ""
    x0, y0, w, h = 50.0, 30.0, 360.0, 220.0
    xmax = max(p for _, p, _ in pts) or 1.0
    body = _y_axis(x0, y0, w, h, f"kNN top-1, k={k} (%)")
    for t in (0.0, 0.5, 1.0):
        x = x0 + 0.05 * w + 0.9 * w * t
        body.append(
            f'<text x="{x:.1f}" y="{y0 + h + 16}" text-anchor="middle">{xmax * t:.2f}</text>'
        )
    body.append(
        f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle">parameters (M)</text>'
    )
    placed: list[tuple[float, float]] = []
    for m, p, a in pts:
        x, y = x0 + 0.05 * w + 0.9 * w * p / xmax, y0 + h - h * max(0.0, min(1.0, a))
        c = PALETTE[list(knn).index(m) % len(PALETTE)]
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{c}">'
            f"<title>{_e(m)}: {_pct(a)}, {p:.2f} M params</title></circle>"
        )
        tx, anchor = (x + 7, "start") if x < x0 + w / 2 else (x - 7, "end")
        ty = y - 6
        while any(abs(tx - px) < 90 and abs(ty - py) < 11 for px, py in placed):
            ty -= 11  # stack the labels of points close together
        placed.append((tx, ty))
        body.append(f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="{anchor}">{_e(m)}</text>')
    body += _legend(list(knn), x0 + w + 15, y0)
    return _svg_frame(560, int(y0 + h + 40), "Accuracy vs parameters", body)


def _charts(metrics: dict) -> str:
    if not metrics.get("labels"):
        return ""
    svgs = [s for s in (_knn_chart(metrics), _acc_params_chart(metrics)) if s]
    if not svgs:
        return ""
    return '<h2>Charts</h2>\n<div class="charts">' + "".join(svgs) + "</div>"


def _header(metrics: dict) -> str:
    """Title, and either the eval set summary or the no-labels box."""
    out = ["<h1>Evaluation report</h1>"]
    ev = metrics.get("eval_set")
    if not metrics.get("labels"):
        out.append(f'<div class="note" id="no-labels">{_e(NO_LABELS)}</div>')
    elif ev:
        chance = 100 / ev["classes"] if ev.get("classes") else float("nan")
        out.append(
            f'<p class="muted">Eval set: {_e(ev["bank"])} bank and {_e(ev["query"])} query images, '
            f"{_e(ev['classes'])} classes (chance {_fmt(chance, '.1f', unit=' %')}); kNN cosine, "
            f"T={_fmt(metrics.get('knn_temperature'), '.2f')}.</p>"
        )
    return "\n".join(out)


def _health(metrics: dict) -> str:
    """Feature health (label-free): rank, uniformity, patch-token norms, registers."""
    rows = []
    for name, h in (metrics.get("feature_health") or {}).items():
        t = h.get("tokens") or {}
        norms = DASH
        if t:
            norms = " / ".join(
                _fmt(t.get(k), ".1f")
                for k in ("patch_norm_median", "patch_norm_p99", "patch_norm_max")
            )
        regs = DASH
        if t.get("num_register_tokens"):
            regs = f"{_e(t['num_register_tokens'])} ({_fmt(t.get('register_norm_median'), '.1f')})"
        rows.append(
            [
                _e(name),
                _e(h.get("images", DASH)),
                _fmt(h.get("effective_rank"), ".1f"),
                _fmt(h.get("uniformity"), ".2f"),
                norms,
                _fmt(t.get("outlier_share"), ".2f", 100.0, " %") if t else DASH,
                regs,
            ]
        )
    head = ["model", "images", "eff. rank", "uniformity", "patch norm median / p99 / max"]
    head += ["outlier tokens", "registers (median norm)"]
    intro = (
        '<p class="muted">On a sample of curated pool images. Effective rank (RankMe; 1 = '
        "collapsed, up to the feature width) and uniformity (Wang &amp; Isola; 0 = collapsed, "
        "lower = more spread) of the CLS features; patch-token norms before the last LayerNorm, "
        "with the share of tokens above 4x the median norm (the artifacts registers remove).</p>"
    )
    return "<h2>Feature health (label-free)</h2>\n" + intro + "\n" + _table(head, rows, "health")


def _provenance(metrics: dict) -> str:
    rows = [[_e(c) for c in row] for row in provenance_rows(metrics)]
    if not rows:
        return ""
    return "<h2>Provenance</h2>\n" + _table(PROVENANCE_HEADER, rows, "provenance")


def _clusters(metrics: dict) -> str:
    """Cluster balance before → after curation, per level (label-free)."""
    rows = []
    for name, d in (metrics.get("cluster_balance") or {}).items():
        b, a = d.get("before", {}), d.get("after", {})
        row = [_e(name)]
        for key in ("entropy_normalised", "gini", "largest_share"):
            row.append(f"{_fmt(b.get(key), '.3f')} → {_fmt(a.get(key), '.3f')}")
        row.append(f"{_e(b.get('nonempty', DASH))} → {_e(a.get('nonempty', DASH))}")
        rows.append(row)
    head = ["level", "entropy (1 = uniform)", "Gini (0 = equal)", "largest cluster share"]
    head.append("non-empty clusters")
    return "<h2>Cluster balance before → after curation (label-free)</h2>\n" + _table(
        head, rows, "clusters"
    )


def _curation(cur: dict | None) -> str:
    """Class balance of raw pool vs random subset vs curated set, planted-data checks."""
    if not cur:
        return ""
    rows = [
        [
            _e(name),
            _fmt(d.get("entropy_normalised"), ".3f"),
            _fmt(d.get("max_min_ratio"), ".1f"),
            _e(", ".join(str(c) for c in d.get("counts", []))),
        ]
        for name, d in (cur.get("class_distribution") or {}).items()
    ]
    head = ["subset", "class entropy (1 = uniform)", "max/min", "counts per class"]
    out = ["<h2>Class balance of the curated set (pool labels)</h2>", _table(head, rows, "classes")]
    if "planted_duplicates" in cur:
        dups = ", ".join(
            f"{_e(o)}: {_e(d['resolved'])}/{_e(d['planted_groups'])}"
            for o, d in cur["planted_duplicates"].items()
        )
        out.append(f"<p>Planted duplicate groups with at most one survivor: {dups}</p>")
    if "broken_files" in cur:
        br = cur["broken_files"]
        out.append(
            f"<p>Broken files quarantined: {_e(br['quarantined'])} / {_e(br['planted'])}</p>"
        )
    return "\n".join(out)


def _twins(metrics: dict) -> str:
    """Register twins' norm statistics side by side (their pictures are among the figures),
    or the note saying how to get a twin."""
    tw = metrics.get("register_twins")
    if not tw:
        return ""
    head = "<h2>Registers: with and without, side by side</h2>"
    if not tw.get("pairs"):
        return f'{head}\n<p class="note" id="register-twins">{_e(tw.get("hint") or "")}</p>'
    rows = [[_e(c) for c in row] for row in twin_rows(metrics)]
    return head + "\n" + _table([_e(h) for h in TWIN_HEADER], rows, "twins")


def _figures(images: dict[str, Path], captions: dict[str, str] | None = None) -> str:
    """Each PNG embedded as a base64 data URI, with its caption; missing files are skipped."""
    captions = {**CAPTIONS, **(captions or {})}
    figs = []
    for name, path in images.items():
        path = Path(path)
        if not path.is_file():
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        caption = captions.get(name, name)
        figs.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(name)}">'
            f"<figcaption><code>{_e(name)}</code>: {_e(caption)}</figcaption></figure>"
        )
    return "<h2>Plots</h2>\n" + "\n".join(figs) if figs else ""


def report_images(folder: str | Path, extra: Iterable[str] = ()) -> dict[str, Path]:
    """The known plots, then ``extra`` file names (the model figures), present in ``folder``
    (name -> path), in page order."""
    folder = Path(folder)
    names = [*(n for n in extra if n not in CAPTIONS), *CAPTIONS]
    return {name: folder / name for name in names if (folder / name).is_file()}


def report_html(
    metrics: dict, images: dict[str, Path], captions: dict[str, str] | None = None
) -> str:
    """The whole self-contained ``report.html``.

    Args:
        metrics: the evaluate stage's ``metrics`` dict (as written to ``metrics.json``).
        images: plot file name -> path of a PNG to embed (e.g. ``report_images(folder)``);
            known names get a caption from ``CAPTIONS`` or ``captions``, others their name.
        captions: file name -> caption of the model figures (``report_figures``).

    Returns:
        The HTML document: title, model table, charts (with labels), label-free sections,
        class balance (when present) and the embedded plots.
    """
    body = [
        _header(metrics),
        _model_table(metrics),
        _charts(metrics),
        _provenance(metrics),
        _clusters(metrics),
        _health(metrics),
        _twins(metrics),
        _curation(metrics.get("curation")),
        _figures(images, captions),
        '<p class="muted">Numbers: <code>metrics.json</code>; lineage of every input: '
        "<code>lineage.json</code> next to each artifact.</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Evaluation report</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body>\n</html>\n"
    )
