"""Curation benchmark: hierarchical k-means + balanced sampling, fast (faiss) vs reference (torch).

Every measured method runs in its own subprocess so that its peak RSS (``ru_maxrss``, which
covers faiss/BLAS allocations that tracemalloc cannot see) is isolated; we report the peak and
its increase over the RSS right after the data was generated.

Quality: a 10 % balanced sample (random member within level-0 clusters) is compared with a 10 %
uniform random sample on the synthetic mixture's true components (number covered, largest
component's share, Gini).

Usage::

    .venv/bin/python benchmarks/curation.py                 # full run, writes results/
    .venv/bin/python benchmarks/curation.py --sizes 20000   # quick smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.subprocess_worker import peak_rss_mb, run_worker  # noqa: E402
from ssl_core.curation import metrics as M  # noqa: E402
from ssl_core.curation.synthetic import hierarchical_mixture  # noqa: E402

N_COMP = 1000  # 50 super-clusters x 20 sub-clusters
DIM = 384


def _quality(comp: np.ndarray, idx: np.ndarray) -> dict:
    s = M.summary(comp[idx], N_COMP)
    return {k: s[k] for k in ("n", "covered", "largest_share", "gini", "entropy_normalised")}


def worker(spec: dict) -> dict:
    """Run one method on freshly generated data; returns timings, memory and quality."""
    import torch

    from ssl_core.curation.hkmeans import hierarchical_kmeans
    from ssl_core.curation.reference import _kpp, ref_assign, ref_hierarchical_kmeans
    from ssl_core.curation.sampling import balanced_sample

    torch.set_num_threads(os.cpu_count() or 1)
    n, levels, steps = spec["n"], tuple(spec["levels"]), spec["steps"]
    x = np.load(spec["data"])  # generated once by the parent, so the baseline RSS is the data
    comp = np.load(spec["labels"])
    rss0 = peak_rss_mb()
    out: dict = {"method": spec["method"], "n": n, "levels": list(levels), "steps": steps}
    target = n // 10
    if spec["method"] == "random":
        idx = np.random.default_rng(0).choice(n, target, replace=False)
        return {**out, "quality": _quality(comp, idx)}
    if spec["method"] == "reference_probe":
        # per-step costs of the reference at this size, for an honest extrapolation
        xt = torch.from_numpy(x)
        k = levels[0]
        c = xt[:k].clone()
        t = time.perf_counter()
        ref_assign(xt, c)
        lloyd = time.perf_counter() - t
        steps_kpp = 20
        t = time.perf_counter()
        _kpp(xt, steps_kpp, torch.Generator().manual_seed(0))
        kpp_step = (time.perf_counter() - t) / steps_kpp
        return {**out, "lloyd_iter_s": lloyd, "kpp_step_s": kpp_step, "peak_rss_mb": peak_rss_mb()}
    t = time.perf_counter()
    if spec["method"] == "fast":
        res = hierarchical_kmeans(
            x, levels, n_iter=spec["n_iter"], n_resampling_steps=steps, seed=0,
            resample_init=spec.get("resample_init", "kmeans++"),
            max_points_per_centroid=spec.get("max_ppc", 128), tol=spec.get("tol", 1e-4),
        )  # fmt: skip
    else:
        res = ref_hierarchical_kmeans(x, levels, n_iter=50, n_resampling_steps=steps, seed=0)
    t_km = time.perf_counter() - t
    t = time.perf_counter()
    idx = balanced_sample(res, target, strategy="random", seed=0)
    t_s = time.perf_counter() - t
    idx_c = balanced_sample(res, target, strategy="closest", seed=0)
    return {
        **out,
        "n_iter": spec.get("n_iter", 50),
        "hkmeans_s": t_km,
        "sampling_s": t_s,
        "total_s": t_km + t_s,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_data_mb": rss0,
        "peak_delta_mb": peak_rss_mb() - rss0,
        "quality": _quality(comp, idx),
        "quality_closest": _quality(comp, idx_c),
    }


def run_sub(spec: dict) -> dict:
    return run_worker(__file__, spec)


def extrapolate(probe: dict, levels: list[int], steps: list[int], n: int) -> dict:
    """Reference cost at level 0 from measured per-step costs (upper levels are negligible).

    One k-means = k k-means++ steps + 50 Lloyd iterations (+1 final assignment). A resampling
    round runs a fresh k-means on ~``k * sample`` <= n/2 points (costs scale ~linearly with
    the number of points) and reassigns all n points.
    """
    k = levels[0]
    one = k * probe["kpp_step_s"] + 51 * probe["lloyd_iter_s"]
    resample = steps[0] * (0.5 * one + probe["lloyd_iter_s"])
    return {"level0_kmeans_s": one, "level0_resampling_s": resample, "total_s": one + resample}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--reference-max-n", type=int, default=1_000_000,
                    help="run the reference fully up to this size, extrapolate above")  # fmt: skip
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/curation_bench"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    cmd = "python benchmarks/curation.py " + " ".join(sys.argv[1:])
    configs = {  # levels, resampling rounds per level, faiss Lloyd iterations
        100_000: ([2000, 200, 50], [0, 10, 10], 20),
        1_000_000: ([2000, 200, 50], [0, 10, 10], 20),
    }
    results = []
    t0 = time.time()
    for n in args.sizes:
        levels, steps, n_iter = configs.get(
            n, ([max(2, n // 50), max(2, n // 500), 5], [0, 10, 10], 20)
        )
        x, comp = hierarchical_mixture(n, dim=DIM, seed=0)
        data, labels = args.data_dir / f"x_{n}.npy", args.data_dir / f"comp_{n}.npy"
        args.data_dir.mkdir(parents=True, exist_ok=True)
        np.save(data, x)
        np.save(labels, comp)
        del x, comp
        base = {"n": n, "levels": levels, "steps": steps, "data": str(data), "labels": str(labels)}
        row: dict = {"n": n, "levels": levels, "resampling_steps": steps}
        row["random"] = run_sub({**base, "method": "random"})["quality"]
        row["fast"] = run_sub({**base, "method": "fast", "n_iter": n_iter})
        for name, extra in VARIANTS.items():
            row[name] = run_sub({**base, "method": "fast", "n_iter": n_iter, **extra})
        if n <= args.reference_max_n:
            row["reference"] = run_sub({**base, "method": "reference"})
            row["reference"]["measured"] = True
        else:
            probe = run_sub({**base, "method": "reference_probe"})
            row["reference"] = {
                "measured": False,
                "probe": probe,
                "extrapolated": extrapolate(probe, levels, steps, n),
            }
        ref_t = row["reference"].get("total_s") or row["reference"]["extrapolated"]["total_s"]
        row["speedup"] = ref_t / row["fast"]["total_s"]
        row["speedups"] = {name: ref_t / row[name]["total_s"] for name in VARIANTS}
        row["run"] = {"command": cmd, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                      "load_average": os.getloadavg()}  # fmt: skip
        results.append(row)
    results = _merge_previous(args.out / "curation.json", results)
    meta = {
        "command": cmd,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "python": platform.python_version(),
        "benchmark_wall_s": time.time() - t0,
        "load_average_at_end": os.getloadavg(),
        "notes": NOTES,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curation.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2)
    )
    (args.out / "curation.md").write_text(render_md(meta, results))


# Ablations of the fast path (spec overrides): no early stop (always n_iter Lloyd iterations,
# the default before `tol`), and Lloyd on at most 32 random points per centroid.
VARIANTS = {"fast_20iters": {"tol": 0.0}, "fast_ppc32": {"max_ppc": 32}}


def _merge_previous(path: Path, results: list[dict]) -> list[dict]:
    """Keep rows of sizes not re-run from an earlier result file (each row says when it ran)."""
    if not path.is_file():
        return results
    done = {r["n"] for r in results}
    prev = json.loads(path.read_text())
    old = [r for r in prev["results"] if r["n"] not in done]
    for r in old:
        r.setdefault("run", {k: prev["meta"][k] for k in ("command", "date")})
    return sorted(old + results, key=lambda r: r["n"])


NOTES = [
    "Fast and reference of one size ran back to back in one script run (its date is in the "
    "speedup row) on 2 shared cores, so absolute times vary by 20-30 % between runs (the "
    "reference measured 162-217 s at 1e5, 1672-2227 s at 1e6); compare within a row.",
    "The reference's k-means++ step used to compute `2 * x @ v` as `(2 * x) @ v` (a full copy "
    "of the data per step, ~6x slower steps at 1e6); the speed-ups committed before that fix "
    "(10.9x at 1e5, 33.9x extrapolated at 1e6) were inflated. These rows are after the fix.",
    "Both paths are bound by the level-0 Lloyd GEMMs (1e5 x 2000 x 384), which faiss runs at "
    "the same BLAS speed as torch; the gain is fewer passes. Lloyd's early stop (`tol` 1e-4, "
    "the default since 2026-11-23) ends level 0 after ~6 of 20 iterations; without it "
    "(fast_20iters, the earlier default) the 1e5 speed-up is 6.8x instead of 15.6x, at 1e6 "
    "25.8x instead of 44.4x.",
    "Coverage of the 1000 true components moves with the seeds more than with the method: in "
    "an ad-hoc sweep at 1e5 (4 hkmeans seeds x 2 sampling seeds, 2026-11-23, not in this "
    "file) the default covered 914-941 (mean 922.6), tol 0 905-938 (mean 925.3), tol 1e-5 "
    "914-958 (mean 927.9); the reference's 936 is one seed. Largest share and Gini, the "
    "balance figures, match the reference at 1e5 and beat it at 1e6 (.019 / .67 vs .022 / .70).",
    "fast_ppc32 (Lloyd on at most 32 points per centroid) is the fastest but covers fewer "
    "components (884 at 1e5, 985 at 1e6; an earlier 1e6 run without early stop also lost "
    "balance, Gini 0.72), so the default stays 128.",
    "Peak RSS is ru_maxrss of a fresh subprocess that loads the data with np.load (whose "
    "own transient peak sets the baseline); '+0' means the method never exceeded that baseline.",
    "Reference above --reference-max-n is extrapolated from measured per-step costs at that N "
    "(k k-means++ steps + 51 Lloyd iterations at level 0, plus half that per level-0 "
    "resampling round); upper levels (<= 2000 points) are negligible.",
    "At 1e6 the smallest true component has ~130 points, so even a random 10 % sample covers "
    "all 1000; compare largest share and Gini there.",
]


def render_md(meta: dict, results: list[dict]) -> str:
    lines = [
        "# Curation benchmark: hierarchical k-means + balanced sampling",
        "",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']}; date: {meta['date']}; benchmark wall time "
        f"{meta['benchmark_wall_s']:.0f} s",
        "- data: `hierarchical_mixture` (50 super x 20 sub-clusters, Zipf(1) sizes, 384-d, "
        "L2-normalised), seed 0; sample = 10 % of N",
        "- fast (the library defaults): faiss Lloyd iterations seeded with batched k-means++ on a "
        "subsample, at most 20 iterations, stopped once one lowers the objective by < 1e-4 "
        "(`tol`), on at most 128 random points per centroid; fast_20iters: always 20 iterations "
        "(`tol: 0`, the default before early stopping); fast_ppc32: at most 32 points per "
        "centroid (`max_points_per_centroid`); every point is assigned at the end in all; "
        "reference: `ssl_core/curation/reference.py` (exact k-means++, 50 Lloyd iterations, "
        "float64 sums, fresh k-means per resampling round)",
        "",
        "| N | levels | R per level | method | time (s) | peak RSS (MB) | covered / 1000 | largest share | Gini |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        head = f"| {r['n']:,} | {r['levels']} | {r['resampling_steps']} "
        for name in ("fast", *VARIANTS, "reference", "random"):
            if name not in r:  # row from before that variant existed
                continue
            m = r[name]
            q = m.get("quality") if name != "random" else m
            if name == "reference" and not m.get("measured"):
                e = m["extrapolated"]
                p = m["probe"]
                t = (f"~{e['total_s']:.0f} (extrapolated: {p['lloyd_iter_s']:.2f} s/Lloyd iter, "
                     f"{p['kpp_step_s'] * 1e3:.0f} ms/k-means++ step)")  # fmt: skip
                lines.append(
                    f"{head}| reference | {t} | {p['peak_rss_mb']:.0f} (probe) | - | - | - |"
                )
                continue
            t = f"{m['total_s']:.1f}" if "total_s" in m else "-"
            mem = (
                f"{m['peak_rss_mb']:.0f} (+{m['peak_delta_mb']:.0f})" if "peak_rss_mb" in m else "-"
            )
            lines.append(
                f"{head}| {name} | {t} | {mem} | {q['covered']} | {q['largest_share']:.3f} | {q['gini']:.2f} |"
            )
        sub = "".join(f", {k}: **{v:.1f}x**" for k, v in r.get("speedups", {}).items())
        when = r.get("run", {}).get("date", meta["date"])
        lines.append(
            f"{head}| **speedup** | fast: **{r['speedup']:.1f}x**{sub} | run {when} | | | |"
        )
    lines += ["", "Rows with `closest` strategy are in curation.json (`quality_closest`).", ""]
    lines += ["Notes:", ""] + [f"- {n}" for n in meta.get("notes", [])] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
