"""Markdown of ``benchmarks/curation.py``'s result: balance per family, speed, the verdicts."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

#: speed-up over the reference that issue #19 asks at these pool sizes
SPEED_TARGETS = {100_000: 10.0, 1_000_000: 30.0}
#: quality columns: key in a run's ``quality``, header, format
COLS = (("covered", "covered", "{:.1f}"), ("gini", "Gini", "{:.3f}"),
        ("top10_share", "top-10 share", "{:.3f}"))  # fmt: skip


def _ms(values: list[float], fmt: str) -> str:
    """Mean, and ± the standard deviation over seeds when there are several."""
    m = fmt.format(float(np.mean(values)))
    return m if len(values) < 2 else f"{m} ± {fmt.format(float(np.std(values)))}"


def summarise(runs: list[dict]) -> dict:
    """Per (family, method): mean/sd of every quality column and of time, over seeds."""
    groups: dict = defaultdict(list)
    for r in runs:
        groups[(r["family"], r["method"])].append(r)
    out = {}
    for key, rs in groups.items():
        s = {c: [r["quality"][c] for r in rs] for c, _, _ in COLS}
        s["seeds"] = [r["seed"] for r in rs]
        s["time"] = [r["total_s"] for r in rs if "total_s" in r]
        s["rss"] = [r["peak_rss_mb"] for r in rs if "peak_rss_mb" in r]
        s["base"] = rs[0]
        out[key] = s
    return out


def verdict(proj: dict, ref: dict) -> dict:
    """Project vs reference: coverage >= and Gini <= the reference's, within seed spread."""
    cov_m, gini_m = np.mean(proj["covered"]), np.mean(proj["gini"])
    cov_slack = max(np.std(proj["covered"]), np.std(ref["covered"]))
    gini_slack = max(np.std(proj["gini"]), np.std(ref["gini"]))
    speed = np.mean(ref["time"]) / np.mean(proj["time"]) if proj["time"] and ref["time"] else None
    return {
        "coverage_ok": bool(cov_m >= np.mean(ref["covered"]) - cov_slack),
        "gini_ok": bool(gini_m <= np.mean(ref["gini"]) + gini_slack),
        "speedup": None if speed is None else float(speed),
    }


def _balance_lines(summary: dict, methods: list[str]) -> list[str]:
    head = "| family (N, levels) | method | seeds | " + " | ".join(h for _, h, _ in COLS)
    lines = [head + " | time s | peak RSS MB |", "|---" * (len(COLS) + 5) + "|"]
    for fam in dict.fromkeys(f for f, _ in summary):
        for m in methods:
            s = summary.get((fam, m))
            if s is None:
                continue
            b = s["base"]
            q = " | ".join(_ms(s[c], f) for c, _, f in COLS)
            t = _ms(s["time"], "{:.1f}") if s["time"] else "-"
            rss = f"{max(s['rss']):.0f}" if s["rss"] else "-"
            name = f"{fam} ({b['n']:,}, {b['levels']})"
            lines.append(f"| {name} | {m} | {len(s['seeds'])} | {q} | {t} | {rss} |")
    return lines


def _verdict_lines(summary: dict) -> list[str]:
    lines = ["| family | coverage >= reference | Gini <= reference | speed-up vs reference |",
             "|---|---|---|---|"]  # fmt: skip
    for fam in dict.fromkeys(f for f, _ in summary):
        if (fam, "project") not in summary or (fam, "reference") not in summary:
            continue
        v = verdict(summary[(fam, "project")], summary[(fam, "reference")])
        sp = f"{v['speedup']:.1f}x" if v["speedup"] else "-"
        yes = {True: "yes", False: "**no**"}
        lines.append(f"| {fam} | {yes[v['coverage_ok']]} | {yes[v['gini_ok']]} | {sp} |")
    return lines


def _speed_lines(speed: list[dict]) -> list[str]:
    lines = ["| N | family | levels | project s | peak RSS MB | reference s (extrapolated) "
             "| speed-up | target |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in speed:
        p, e, pr = r["project"], r["reference_extrapolated"], r["probe"]
        ref = (f"~{e['total_s']:.0f} ({pr['lloyd_iter_s']:.2f} s / Lloyd iteration, "
               f"{pr['kpp_step_s'] * 1e3:.0f} ms / k-means++ step)")  # fmt: skip
        goal = SPEED_TARGETS.get(r["n"])
        met = (
            "-"
            if goal is None
            else f">= {goal:.0f}x: {'yes' if r['speedup'] >= goal else '**no**'}"
        )
        lines.append(f"| {r['n']:,} | {r['family']} | {r['levels']} | {p['total_s']:.1f} "
                     f"| {p['peak_rss_mb']:.0f} | {ref} | **{r['speedup']:.1f}x** | {met} |")  # fmt: skip
    return lines


def render_md(result: dict, notes: list[str] = ()) -> str:
    meta, summary = result["meta"], summarise(result["balance"])
    methods = ["project", *meta["variants"], "reference", "random"]
    lines = [
        "# Curation benchmark: balance on every data family, and speed",
        "",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']}; date: {meta['date']}; wall {meta['benchmark_wall_s']:.0f} s",
        f"- project = params.yaml `cluster:` {meta['project_defaults']}; variants (speed knobs): "
        f"{meta['variants']}",
        f"- reference = `ssl_core/curation/reference.py` (upstream ssl-data-curation's algorithm: "
        f"greedy k-means++, {meta['reference']['n_iter']} Lloyd iterations, float64 sums, "
        f"{meta['reference']['n_resampling_steps']} resampling rounds at every level)",
        "- quality of a 10 % balanced sample (random members of the level-0 clusters) on the "
        "data's true components; mean ± std over the seeds (clustering and sampling seed)",
        "",
        "## Verdict",
        "",
        *_verdict_lines(summary),
        "",
        "## Balance",
        "",
        *_balance_lines(summary, methods),
        "",
    ]
    if result.get("speed"):
        lines += ["## Speed at scale", "", *_speed_lines(result["speed"]), ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)
