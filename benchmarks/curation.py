"""Curation benchmark: the project's hierarchical k-means + balanced sampling vs the reference.

Two questions, answered in one run:

- **Balance** (every data family x several seeds): a 10 % balanced sample from the project's
  curation (the ``cluster:`` defaults of ``params.yaml``, read at run time) and from the
  reference (``ssl_core/curation/reference.py``, a port of facebookresearch/ssl-data-curation run
  the way its configs run it: greedy k-means++, 50 Lloyd iterations, 10 resampling rounds at
  *every* level) is scored on the data's true components: how many are covered, the Gini
  coefficient of the per-component counts (0 = even) and the share of the 10 largest.
  Speed knobs that cost balance run as extra methods so their price is visible.
- **Speed**: the same runs' wall time at the balance size, and at ``--speed-sizes`` above it the
  project measured against the reference extrapolated from its measured per-step costs.

Every measured run is a fresh subprocess (peak RSS = its ``ru_maxrss``, over the RSS after
loading the data). Families (:data:`FAMILIES`): ``hier_norm`` (the hierarchical Zipf mixture,
L2-normalised), ``hier_unnorm`` (the same, not normalised), ``unequal_spread`` (components whose
spreads differ by 10x), ``demo_teacher`` (the demo pool embedded by the demo teacher; true
components = the Fashion-MNIST classes; needs ``--demo-project`` after ``make demo``).

Usage::

    .venv/bin/python benchmarks/curation.py                       # the committed run (~2 h)
    .venv/bin/python benchmarks/curation.py --balance-n 20000 --seeds 0 --ref-seeds 0 \\
        --speed-sizes --families hier_norm --out /tmp/bench         # smoke run, ~2 min
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

from benchmarks.curation_report import render_md  # noqa: E402
from benchmarks.subprocess_worker import peak_rss_mb, run_worker  # noqa: E402
from ssl_core.curation import metrics as M  # noqa: E402
from ssl_core.curation.synthetic import hierarchical_mixture, unequal_spread_mixture  # noqa: E402

DIM = 384
#: reference settings as upstream's configs run them (configs/*.yaml): R = 10 at every level
REF_STEPS, REF_ITERS = 10, 50
#: speed knobs of the project path, each run as its own method (spec overrides of the
#: defaults) on the first seed only: plain k-means++ seeding (before 2026-12-01), 2 resampling
#: rounds (the default before), resampling rounds on k * 16 random points (the large-pool knob)
VARIANTS: dict[str, dict] = {
    "project_plain_kpp": {"kpp_trials": 1},
    "project_r2": {"n_resampling_steps": 2},
    "project_rppc16": {"resample_points_per_centroid": 16},
}


def project_defaults() -> dict:
    """The ``cluster:`` parameters of params.yaml that hierarchical_kmeans takes."""
    from ssl_core.config import load_params

    c = load_params(ROOT / "params.yaml").cluster
    keep = ("n_iter", "tol", "n_resampling_steps", "max_points_per_centroid",
            "resample_points_per_centroid")  # fmt: skip
    return {k: getattr(c, k) for k in keep}


def make_family(name: str, n: int, demo_project: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32 (n, d), true component int64 (n,))`` of a family (data seed 0)."""
    if name == "hier_norm":
        return hierarchical_mixture(n, dim=DIM, seed=0)
    if name == "hier_unnorm":
        return hierarchical_mixture(n, dim=DIM, normalise=False, seed=0)
    if name == "unequal_spread":
        return unequal_spread_mixture(n, dim=DIM, seed=0)
    if name == "demo_teacher":
        return demo_teacher_embeddings(demo_project)
    raise ValueError(f"unknown family {name!r} (one of {', '.join(FAMILIES)})")


def demo_teacher_embeddings(project: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The demo's deduplicated pool embedded by its teacher, with the class of every image."""
    import polars as pl

    from ssl_core.config import load_params
    from ssl_core.curation.embed import embed_paths, make_embedder
    from ssl_core.data.labels import POOL_LABELS

    if project is None:
        raise SystemExit("family demo_teacher needs --demo-project (a folder after `make demo`)")
    params = load_params(project / "params.yaml")
    paths = {n: project / getattr(params.paths, n) for n in ("dedup_dir", "labels", "pool")}
    teacher = project / params.paths.teacher_dir
    kept = pl.read_parquet(paths["dedup_dir"] / "kept.parquet").join(
        pl.read_parquet(paths["labels"] / POOL_LABELS).select("path", "label"), on="path"
    )
    emb = make_embedder(str(teacher), params.train.image_size)
    x, ok = embed_paths(paths["pool"], kept["path"].to_list(), emb, 256, False)
    return np.ascontiguousarray(x[ok], np.float32), kept["label"].to_numpy()[ok].astype(np.int64)


FAMILIES = ("hier_norm", "hier_unnorm", "unequal_spread", "demo_teacher")


def quality(comp: np.ndarray, idx: np.ndarray, n_comp: int) -> dict:
    s = M.summary(comp[idx], n_comp)
    return {k: s[k] for k in ("n", "covered", "gini", "top10_share", "largest_share")}


def levels_for(n: int) -> list[int]:
    """Levels of the benchmark: 50 points per level-0 cluster up to 2,000 clusters (the issue's
    and the earlier benchmark's [2000, 200, 50] from 1e5 on), then /10 and /40."""
    k0 = max(2, min(n // 50, 2000))
    return [k0, max(2, k0 // 10), max(2, k0 // 40)]


def worker(spec: dict) -> dict:
    """One method on one data file with one seed: time, memory and sample quality."""
    import torch

    from ssl_core.curation.hkmeans import hierarchical_kmeans
    from ssl_core.curation.reference import ref_hierarchical_kmeans
    from ssl_core.curation.sampling import balanced_sample

    torch.set_num_threads(os.cpu_count() or 1)
    x, comp = np.load(spec["data"]), np.load(spec["labels"])
    rss0 = peak_rss_mb()
    levels, seed, method = spec["levels"], spec["seed"], spec["method"]
    if method == "reference_probe":
        return {**spec, **probe_reference(x, levels), "peak_rss_mb": peak_rss_mb()}
    target = len(x) // 10
    t = time.perf_counter()
    if method == "random":
        idx = np.random.default_rng(seed).choice(len(x), target, replace=False)
        return {**spec, "quality": quality(comp, idx, spec["n_comp"])}
    if method == "reference":
        res = ref_hierarchical_kmeans(
            x, levels, n_iter=REF_ITERS, n_resampling_steps=REF_STEPS, seed=seed
        )
    else:
        kw = dict(spec["kwargs"])
        r0 = kw.pop("level0_resampling", None)
        if r0 is not None:  # level 0 without resampling, the levels above as configured
            kw["n_resampling_steps"] = [r0] + [kw["n_resampling_steps"]] * (len(levels) - 1)
        res = hierarchical_kmeans(x, levels, seed=seed, **kw)
    t_km = time.perf_counter() - t
    idx = balanced_sample(res, target, strategy="random", seed=seed)
    return {
        **spec,
        "total_s": time.perf_counter() - t,
        "hkmeans_s": t_km,
        "peak_rss_mb": peak_rss_mb(),
        "peak_delta_mb": peak_rss_mb() - rss0,
        "quality": quality(comp, idx, spec["n_comp"]),
    }


def probe_reference(x: np.ndarray, levels: list[int]) -> dict:
    """Measured per-step costs of the reference at this size (for the extrapolation)."""
    import torch

    from ssl_core.curation.reference import _kpp, ref_assign

    xt = torch.from_numpy(x)
    k = levels[0]
    t = time.perf_counter()
    ref_assign(xt, xt[:k].clone())
    lloyd = time.perf_counter() - t
    steps = 10
    t = time.perf_counter()  # greedy k-means++ with the trials it uses at this k
    _kpp(xt, steps, torch.Generator().manual_seed(0), n_local_trials=2 + int(np.log(k)))
    return {"lloyd_iter_s": lloyd, "kpp_step_s": (time.perf_counter() - t) / steps}


def extrapolate(probe: dict, levels: list[int]) -> dict:
    """Reference time at level 0 from per-step costs (upper levels are negligible).

    One k-means = k greedy k-means++ steps + 50 Lloyd iterations + 1 assignment. Each of the
    ``REF_STEPS`` resampling rounds runs a fresh k-means on ~half the points (costs are
    ~linear in the points) and reassigns all of them.
    """
    one = levels[0] * probe["kpp_step_s"] + (REF_ITERS + 1) * probe["lloyd_iter_s"]
    rounds = REF_STEPS * (0.5 * one + probe["lloyd_iter_s"])
    return {"level0_kmeans_s": one, "level0_resampling_s": rounds, "total_s": one + rounds}


def _save_family(name: str, n: int, args: argparse.Namespace) -> dict:
    x, comp = make_family(name, n, args.demo_project)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    data, labels = (
        args.data_dir / f"{name}_{len(x)}_x.npy",
        args.data_dir / f"{name}_{len(x)}_c.npy",
    )
    np.save(data, x)
    np.save(labels, comp)
    n_comp = int(comp.max()) + 1
    levels = levels_for(len(x)) if name != "demo_teacher" else demo_levels(len(x))
    return {"family": name, "n": len(x), "n_comp": n_comp, "levels": levels,
            "data": str(data), "labels": str(labels)}  # fmt: skip


def demo_levels(n: int) -> list[int]:
    """The levels the demo's cluster stage uses for this many points (``levels: auto``)."""
    from ssl_core.sizing import auto_levels

    return list(auto_levels(n))


def balance_runs(args: argparse.Namespace, defaults: dict) -> list[dict]:
    rows = []
    for fam in args.families:
        base = _save_family(fam, args.balance_n, args)
        for s in args.seeds:
            rows.append(run_worker(__file__, {**base, "method": "random", "seed": s}))
            rows.append(
                run_worker(__file__, {**base, "method": "project", "kwargs": defaults, "seed": s})
            )
        for name in args.variants:
            spec = {**base, "method": name, "kwargs": {**defaults, **VARIANTS[name]},
                    "seed": args.seeds[0]}  # fmt: skip
            rows.append(run_worker(__file__, spec))
        for s in args.ref_seeds:
            rows.append(run_worker(__file__, {**base, "method": "reference", "seed": s}))
    return rows


def speed_runs(args: argparse.Namespace, defaults: dict) -> list[dict]:
    rows = []
    for n in args.speed_sizes:
        base = _save_family(args.speed_family, n, args)
        fast = run_worker(__file__, {**base, "method": "project", "kwargs": defaults, "seed": 0})
        probe = run_worker(__file__, {**base, "method": "reference_probe", "seed": 0})
        ref = extrapolate(probe, base["levels"])
        rows.append({**base, "project": fast, "probe": probe, "reference_extrapolated": ref,
                     "speedup": ref["total_s"] / fast["total_s"]})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker")
    ap.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--balance-n", type=int, default=100_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ref-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--speed-sizes", type=int, nargs="*", default=[1_000_000])
    ap.add_argument("--speed-family", default="hier_norm", choices=FAMILIES[:3])
    ap.add_argument("--demo-project", type=Path, help="a project folder after `make demo`")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/curation_bench"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if "demo_teacher" in args.families and args.demo_project is None:
        print("demo_teacher: no --demo-project given, family skipped", flush=True)
        args.families = [f for f in args.families if f != "demo_teacher"]
    t0 = time.time()
    defaults = project_defaults()
    balance = balance_runs(args, defaults)
    speed = speed_runs(args, defaults)
    meta = {
        "command": "python benchmarks/curation.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "python": platform.python_version(),
        "benchmark_wall_s": time.time() - t0,
        "load_average_at_end": os.getloadavg(),
        "project_defaults": defaults,
        "variants": {k: VARIANTS[k] for k in args.variants},
        "reference": {"n_iter": REF_ITERS, "n_resampling_steps": REF_STEPS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "balance": balance, "speed": speed}
    (args.out / "curation.json").write_text(json.dumps(result, indent=2))
    (args.out / "curation.md").write_text(render_md(result))
    print((args.out / "curation.md").read_text())


if __name__ == "__main__":
    main()
