"""Curation at the scale of a real pool: hierarchical k-means + balanced sampling on a float16
memmap of N x 384 embeddings (issue #19, item 3; default N = 1e7, 7.2 GiB on disk).

The data (``hierarchical_mixture``: 50 x 20 Zipf-sized components, L2-normalised) is streamed
into ``<data-dir>/x_<n>_s<seed>.npy`` (float16) plus ``comp_<n>_s<seed>.npy`` and reused when
present. Clustering and sampling run in a fresh subprocess (``subprocess_worker``) on
``np.load(..., mmap_mode="r")``, so its peak RSS (``ru_maxrss``) is its own; a sampler thread
also records the peak anonymous RSS (``RssAnon``: what the process allocated) apart from the
file pages of the memmap it touched (``RssFile``: page cache, reclaimable). The worker wraps
the library's k-means building blocks with timers (instrumentation only) to report where each
level's time goes.

Settings: ``cluster:`` (n_iter, tol, n_resampling_steps, max_points_per_centroid, seed) and
``curate:`` (target_size, strategy, seed) from params.yaml, read at run time. ``levels`` is not
taken from params: its ``auto`` (one level-0 cluster per 40 points) gives 250,000 level-0
clusters at 1e7, ~12x the cost of the default here, ``[N/500, N/5000, N/50000]`` (1e7:
[20000, 2000, 200], the scale of the curation paper's lower levels; 1e6: [2000, 200, 20]:
the same points per cluster, so a 1e6 run measures the costs a 1e7 run scales up).
``--levels auto`` uses params' rule anyway.

Usage::

    .venv/bin/python benchmarks/curation_scale.py --n 1000000 --extrapolate-to 10000000
    .venv/bin/python benchmarks/curation_scale.py            # 1e7: hours on 2 cores, see .md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.subprocess_worker import peak_rss_mb, run_worker  # noqa: E402
from ssl_core import sizing  # noqa: E402
from ssl_core.config import load_params  # noqa: E402
from ssl_core.curation import metrics as M  # noqa: E402
from ssl_core.curation.synthetic import write_hierarchical_mixture  # noqa: E402

DIM = 384
N_COMP = 1000  # hierarchical_mixture defaults: 50 super x 20 sub-clusters
RESULTS = ROOT / "benchmarks" / "results"


def default_levels(n: int) -> list[int]:
    """[N/500, N/5000, N/50000] (at least 2 clusters per level)."""
    return [max(2, n // 500), max(2, n // 5000), max(2, n // 50000)]


def library_settings(params_path: Path, n: int) -> dict:
    """``cluster:`` and ``curate:`` settings from params.yaml (``auto`` target resolved)."""
    p = load_params(params_path)
    c, cur = p.cluster, p.curate
    return {
        "n_iter": c.n_iter, "tol": c.tol, "n_resampling_steps": c.n_resampling_steps,
        "max_points_per_centroid": c.max_points_per_centroid, "seed": c.seed,
        "resample_points_per_centroid": c.resample_points_per_centroid,
        "params_levels": c.levels,
        "target_size": sizing.resolve_target_size(cur.target_size, n),
        "strategy": cur.strategy, "sample_seed": cur.seed,
    }  # fmt: skip


def ensure_data(n: int, seed: int, data_dir: Path) -> dict:
    """The float16 data + labels for (n, seed), generated (timed) unless already there."""
    data_dir.mkdir(parents=True, exist_ok=True)
    x_path, c_path = data_dir / f"x_{n}_s{seed}.npy", data_dir / f"comp_{n}_s{seed}.npy"
    out: dict = {"data": str(x_path), "labels": str(c_path), "generated": False}
    if not (x_path.is_file() and c_path.is_file()):
        t = time.perf_counter()
        write_hierarchical_mixture(x_path, c_path, n=n, dim=DIM, seed=seed)
        out.update(generated=True, generation_s=time.perf_counter() - t)
    out["disk_bytes"] = x_path.stat().st_size + c_path.stat().st_size
    return out


class _RssSampler(threading.Thread):
    """Peak VmRSS / RssAnon / RssFile (MiB) of this process, read from /proc every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
        self.stop = threading.Event()

    def sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in self.peak:
                self.peak[key] = max(self.peak[key], int(val.split()[0]) / 1024.0)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.sample()


def _instrument(calls: list[dict], state: dict) -> None:
    """Time the k-means building blocks hkmeans calls (module attributes, this process only)."""
    from ssl_core.curation import hkmeans as hk
    from ssl_core.curation import kmeans as km
    from ssl_core.curation import nearest as nn

    def timed(mod, name: str, op: str, shape) -> None:
        fn = getattr(mod, name)

        def wrapper(*a, **kw):
            if op == "level":
                state.update(level=state["level"] + 1, round=-1, t_level=time.perf_counter())
            if op == "kmeans":
                state.update(round=state["round"] + 1, kmeans_rows=len(a[0]))
            t, cpu = time.perf_counter(), time.process_time()
            r = fn(*a, **kw)
            calls.append({"op": op, "level": state["level"], "round": state["round"],
                          "seconds": time.perf_counter() - t, "cpu_s": time.process_time() - cpu, **shape(a, kw, r)})  # fmt: skip
            return r

        setattr(mod, name, wrapper)

    rows_k = lambda a, kw, r: {"rows": len(a[0]), "k": len(a[1])}  # noqa: E731
    timed(hk, "_cluster_level", "level", lambda a, kw, r: {"rows": len(a[0]), "k": a[1]})
    timed(hk, "kmeans_with_distances", "kmeans", lambda a, kw, r: {"rows": len(a[0]), "k": a[1]})
    timed(hk, "fit_centroids", "kmeans", lambda a, kw, r: {"rows": len(a[0]), "k": a[1]})
    timed(hk, "assign", "reassign", rows_k)
    timed(km, "assign", "final_assign", rows_k)
    timed(hk, "closest_per_cluster", "closest", lambda a, kw, r: {"rows": len(a[0])})
    timed(
        km,
        "kmeans_plus_plus",
        "kpp",
        lambda a, kw, r: {"rows": len(a[0]), "k": a[1], "kmeans_rows": state["kmeans_rows"]},
    )
    timed(km, "_lloyd", "lloyd", lambda a, kw, r: {"rows": len(a[0]), "k": a[1], "ppc": a[7],
                                                   "train_calls": state.pop("train_calls", 0)})  # fmt: skip
    lloyd = nn.lloyd

    def counted_lloyd(*a, **kw):  # Lloyd iterations of the run (its second return value)
        c, iters = lloyd(*a, **kw)
        state["train_calls"] = state.get("train_calls", 0) + iters
        return c, iters

    nn.lloyd = counted_lloyd


def worker(spec: dict) -> dict:
    """Cluster + sample the memmapped data with the library; timings, memory, balance."""
    from ssl_core.curation.hkmeans import hierarchical_kmeans
    from ssl_core.curation.sampling import balanced_sample

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    sampler = _RssSampler()
    sampler.start()
    x = np.load(spec["data"], mmap_mode="r")
    comp = np.load(spec["labels"])
    s = spec["settings"]
    rss0 = peak_rss_mb()
    calls: list[dict] = []
    state: dict = {"level": -1, "round": -1, "kmeans_rows": 0}
    _instrument(calls, state)
    t0, cpu0 = time.perf_counter(), time.process_time()
    res = hierarchical_kmeans(
        x, spec["levels"], n_iter=s["n_iter"], n_resampling_steps=s["n_resampling_steps"],
        max_points_per_centroid=s["max_points_per_centroid"], tol=s["tol"], seed=s["seed"],
        resample_points_per_centroid=s["resample_points_per_centroid"], progress=True,
    )  # fmt: skip
    t_hk, cpu_hk = time.perf_counter() - t0, time.process_time() - cpu0
    levels_s = [c["seconds"] for c in calls if c["op"] == "level"]
    levels_cpu = [c["cpu_s"] for c in calls if c["op"] == "level"]
    t = time.perf_counter()
    idx = balanced_sample(res, s["target_size"], strategy=s["strategy"], seed=s["sample_seed"])
    t_sample = time.perf_counter() - t
    rand = np.random.default_rng(s["sample_seed"]).choice(len(x), len(idx), replace=False)
    sampler.stop.set()
    sampler.sample()
    return {
        "hkmeans_s": t_hk,
        "entry_s": t_hk - sum(levels_s),  # before level 0: input conversion + data hash
        "level_s": levels_s,
        "hkmeans_cpu_s": cpu_hk,
        "entry_cpu_s": cpu_hk - sum(levels_cpu),
        "level_cpu_s": levels_cpu,
        "sampling_s": t_sample,
        "calls": calls,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_load_mb": rss0,
        "peak_proc_status_mb": sampler.peak,
        "balance": {
            "pool": balance(comp, None),
            "curated": balance(comp, idx),
            "random": balance(comp, rand),
        },  # fmt: skip
    }


def balance(comp: np.ndarray, idx: np.ndarray | None) -> dict:
    """Coverage / Gini / largest share of a sample's components, and the share of the sample
    in the pool's 10 largest components (top-10 share)."""
    top10 = np.argsort(-np.bincount(comp, minlength=N_COMP), kind="stable")[:10]
    lab = comp if idx is None else comp[idx]
    s = M.summary(lab, N_COMP)
    return {
        **{k: s[k] for k in ("n", "covered", "coverage", "largest_share", "gini")},
        "top10_share": float(np.isin(lab, top10).mean()),
    }


def _cost(op: str, rows: float, k: float, c: dict) -> float:
    """Relative cost of one call of ``op`` (Lloyd: per iteration, iterations assumed equal)."""
    if op in ("reassign", "final_assign"):
        return rows * k
    if op == "lloyd":
        return min(rows, k * c["ppc"]) * k
    if op == "kpp":
        return min(rows, max(8 * k, 20000)) * k  # kpp_sample default of kmeans_with_distances
    if op == "closest":
        return rows * math.log(max(rows, 2))
    raise ValueError(op)


def extrapolate(
    w: dict, n: int, levels: list[int], n_t: int, levels_t: list[int], key: str = "seconds"
) -> dict:
    """Per-level, per-op time at (n_t, levels_t) from the calls measured at (n, levels).

    Each call's time is scaled by the ratio of its cost model (:func:`_cost`) at the target
    shape: a level's input rows scale with that level's input size, k becomes the target's.
    Time not inside a timed op (gathers of the resampled rows, bookkeeping) and the entry,
    sampling and generation phases scale with N. ``key``: ``"seconds"`` (wall) or
    ``"cpu_s"`` (process CPU time, less sensitive to other load on the machine).
    """
    lv_key, entry_key = (
        ("level_s", "entry_s") if key == "seconds" else ("level_cpu_s", "entry_cpu_s")
    )
    if len(levels) != len(levels_t):
        raise ValueError("extrapolation needs the same number of levels")
    n_in = [n, *levels[:-1]]
    n_in_t = [n_t, *levels_t[:-1]]
    out: dict = {"n": n_t, "levels": levels_t, "per_level": []}
    for lvl in range(len(levels)):
        sc, k_t = n_in_t[lvl] / n_in[lvl], levels_t[lvl]
        ops: dict[str, float] = {}
        calls = [c for c in w["calls"] if c["level"] == lvl and c["op"] not in ("level", "kmeans")]
        for c in calls:
            rows = c.get("kmeans_rows", c["rows"]) if c["op"] == "kpp" else c["rows"]
            f = _cost(c["op"], rows * sc, k_t, c) / _cost(c["op"], rows, c.get("k", 1), c)
            ops[c["op"]] = ops.get(c["op"], 0.0) + c[key] * f
        other = w[lv_key][lvl] - sum(c[key] for c in calls)
        ops["other"] = other * sc
        out["per_level"].append({k: round(v, 1) for k, v in ops.items()})
    r = n_t / n
    out["entry_s"] = w[entry_key] * r
    out["sampling_s"] = w["sampling_s"] * r
    out["hkmeans_s"] = out["entry_s"] + sum(sum(p.values()) for p in out["per_level"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--worker")
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--levels", nargs="+", help="clusters per level, or 'auto' (params' rule)")
    ap.add_argument("--seed", type=int, default=0, help="data seed")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/curation_scale"))
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--extrapolate-to", type=int, help="also extrapolate to this N (levels scaled)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    cmd = "python benchmarks/curation_scale.py " + " ".join(sys.argv[1:])
    if args.levels == ["auto"]:
        levels = sizing.auto_levels(args.n)
    else:
        levels = [int(v) for v in args.levels] if args.levels else default_levels(args.n)
    settings = library_settings(args.params, args.n)
    data = ensure_data(args.n, args.seed, args.data_dir)
    spec = {"data": data["data"], "labels": data["labels"], "levels": levels, "settings": settings}
    load0 = os.getloadavg()
    t = time.perf_counter()
    w = run_worker(__file__, spec)
    row = {"n": args.n, "levels": levels, "settings": settings, "data": data, "worker": w,
           "worker_wall_s": time.perf_counter() - t}  # fmt: skip
    if args.extrapolate_to:
        lv_t = [round(k * args.extrapolate_to / args.n) for k in levels]
        row["extrapolated"] = extrapolate(w, args.n, levels, args.extrapolate_to, lv_t)
        row["extrapolated_cpu"] = extrapolate(w, args.n, levels, args.extrapolate_to, lv_t, "cpu_s")
        if "generation_s" in data:
            row["extrapolated"]["generation_s"] = (
                data["generation_s"] * args.extrapolate_to / args.n
            )
    meta = {
        "command": cmd,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, no GPU",
        "python": platform.python_version(),
        "load_average_at_start": load0,
        "load_average_at_end": os.getloadavg(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "curation_scale.json"
    prev = json.loads(path.read_text())["runs"] if path.is_file() else []
    runs = [r for r in prev if r["n"] != args.n] + [{"meta": meta, **row}]
    runs.sort(key=lambda r: r["n"])
    path.write_text(json.dumps({"runs": runs}, indent=2))
    (args.out / "curation_scale.md").write_text(render_md(runs))


NOTES = [
    "Ops (instrumentation of the library's own functions): `kpp` batched k-means++ seeding on "
    "its subsample; `lloyd` Lloyd iterations on at most k x max_points_per_centroid rows; "
    "`final_assign` the assignment of all rows a k-means was given (in resampling rounds that "
    "is the resampled set, and hkmeans discards the result); `reassign` the resampling "
    "round's assignment of all of the level's points; `closest` the per-cluster selection; "
    "`other` the rest of the level (mostly gathering the resampled rows from the memmap).",
    "`entry` is hierarchical_kmeans before level 0: the data hash (a float16 memmap is read "
    "as it is, chunk by chunk, never copied whole; the committed 1e6 run of 2026-12-01 09:55 "
    "still made a float32 copy here, which its RssAnon includes).",
    "Extrapolation scales each measured call by its cost model at the target shape: "
    "assignment rows x k, Lloyd min(rows, k x max_ppc) x k per iteration (same number of "
    "iterations assumed), k-means++ min(rows, max(8k, 20000)) x k, selection n log n, the "
    "rest and the entry linearly in N. CPU-second figures are process CPU time (2 compute "
    "threads): on an idle 2-core machine wall time is about half of them; wall-second figures "
    "carry the load of the shared machine at the time (load average in the header).",
    "RssFile is memmap pages this process touched (page cache, reclaimable, shared); a run "
    "that reads the whole file shows up to its size there.",
]


def _ops_line(ops: dict) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1]))


def render_md(runs: list[dict]) -> str:
    """Markdown report of every recorded run (one per N)."""
    lines = ["# Curation at pool scale: float16 memmap, hierarchical k-means + balanced sampling",
             "", "Written by `benchmarks/curation_scale.py`; numbers in curation_scale.json.", ""]  # fmt: skip
    for r in runs:
        m, w, d, s = r["meta"], r["worker"], r["data"], r["settings"]
        ps = w["peak_proc_status_mb"]
        gen = f"{d['generation_s']:.0f} s" if "generation_s" in d else "reused"
        lines += [
            f"## N = {r['n']:,}, levels {r['levels']}",
            "",
            f"- command: `{m['command']}`; date {m['date']}; {m['machine']}; load average at "
            f"start / end {m['load_average_at_start'][0]:.1f} / {m['load_average_at_end'][0]:.1f} (1 min)",
            f"- settings (params.yaml `cluster:` / `curate:`): n_iter {s['n_iter']}, tol "
            f"{s['tol']}, R {s['n_resampling_steps']}, max_points_per_centroid "
            f"{s['max_points_per_centroid']}, target {s['target_size']:,} ({s['strategy']})",
            f"- data: {d['disk_bytes'] / 2**30:.2f} GiB on disk (float16 + int64 labels); "
            f"generation {gen}",
            *([f"- note: {m['note']}"] if m.get("note") else []),
            f"- hkmeans {w['hkmeans_s']:.0f} s (entry {w['entry_s']:.0f} s, levels "
            f"{', '.join(f'{v:.0f}' for v in w['level_s'])} s; CPU time {w['hkmeans_cpu_s']:.0f} s); "
            f"sampling {w['sampling_s']:.1f} s",
            f"- peak RSS {w['peak_rss_mb']:.0f} MiB (ru_maxrss); sampled peaks: RssAnon "
            f"{ps['RssAnon']:.0f} MiB, RssFile {ps['RssFile']:.0f} MiB (memmap pages)",
        ]
        for lvl in range(len(r["levels"])):
            ops: dict[str, float] = {}
            for c in w["calls"]:
                if c["level"] == lvl and c["op"] not in ("level", "kmeans"):
                    ops[c["op"]] = ops.get(c["op"], 0.0) + c["seconds"]
            lines.append(f"  - level {lvl} ({w['level_s'][lvl]:.0f} s): {_ops_line(ops)} s")
        lines += ["", "| sample | n | covered / 1000 | Gini | largest share | top-10 share |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, b in w["balance"].items():
            lines.append(f"| {name} | {b['n']:,} | {b['covered']} | {b['gini']:.3f} | "
                         f"{b['largest_share']:.4f} | {b['top10_share']:.4f} |")  # fmt: skip
        for name, what in (("extrapolated", "wall seconds"), ("extrapolated_cpu", "CPU seconds")):
            if name not in r:
                continue
            e = r[name]
            lines += ["", f"**Extrapolated** (not measured) to N = {e['n']:,}, levels "
                      f"{e['levels']}, from the {what} above: hkmeans ~{e['hkmeans_s'] / 3600:.1f}"
                      f" h, sampling ~{e['sampling_s']:.0f} s"]  # fmt: skip
            for lvl, ops in enumerate(e["per_level"]):
                lines.append(f"- level {lvl}: {_ops_line(ops)} s")
        lines.append("")
    lines += ["Notes:", ""] + [f"- {n}" for n in NOTES] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
