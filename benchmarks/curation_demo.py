"""Curation quality on the demo pool's real embeddings: 10 % curated vs 10 % random sample.

The demo pool's true components are the Fashion-MNIST classes (labels known for the demo only,
``pool_labels.parquet``). For each embedding model the deduplicated pool is clustered with the
``cluster:`` parameters of ``params.yaml`` (the same hierarchical k-means the stage runs), a
balanced 10 % sample is drawn, and its class coverage / largest class share / normalised class
entropy / max-min ratio are compared with a uniform random 10 % sample, over several seeds.

Usage (after ``make demo``)::

    .venv/bin/python benchmarks/curation_demo.py                     # pixels (the stage's model)
    .venv/bin/python benchmarks/curation_demo.py --models pixels data/teacher

Writes ``benchmarks/results/curation_demo.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from ssl_core.config import load_params  # noqa: E402
from ssl_core.curation import metrics as M  # noqa: E402
from ssl_core.curation.embed import embed_paths, make_embedder  # noqa: E402
from ssl_core.curation.hkmeans import hierarchical_kmeans  # noqa: E402
from ssl_core.curation.sampling import balanced_sample  # noqa: E402
from ssl_core.data.labels import POOL_LABELS  # noqa: E402
from ssl_core.utils.atomic import write_json  # noqa: E402

FIELDS = ("covered", "largest_share", "entropy_normalised", "max_min_ratio")


def _quality(labels: np.ndarray, n_classes: int) -> dict:
    s = M.summary(labels, n_classes)
    s["max_min_ratio"] = M.max_min_ratio(labels, n_classes)
    return {k: float(s[k]) for k in FIELDS}


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in FIELDS} | {
        f"{k}_std": float(np.std([r[k] for r in rows])) for k in FIELDS
    }


def _sd(q: dict, key: str) -> str:
    return f" ± {q[key + '_std']:.3f}" if key + "_std" in q else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--models", nargs="+", default=["pixels"], help="embed.model specs")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    params = load_params(args.params)
    kept_path = Path(params.paths.dedup_dir) / "kept.parquet"
    labels_path = Path(params.paths.labels) / POOL_LABELS
    for p in (kept_path, labels_path):
        if not p.exists():
            raise SystemExit(f"{p} is missing: run `make demo` first (demo pool only)")
    kept = pl.read_parquet(kept_path).join(
        pl.read_parquet(labels_path).select("path", "label"), on="path"
    )
    y = kept["label"].to_numpy()
    n_classes = int(y.max()) + 1
    target = int(round(args.fraction * len(y)))
    c = params.cluster
    t0 = time.time()
    results: dict = {
        "raw_pool": _quality(y, n_classes),
        "random": _mean(
            [
                _quality(
                    y[np.random.default_rng(s).choice(len(y), target, replace=False)], n_classes
                )
                for s in range(args.seeds)
            ]
        ),
    }
    for spec in args.models:
        size = params.embed.image_size if spec == "pixels" else params.train.image_size
        emb = make_embedder(spec, size, seed=params.embed.seed)
        x, ok = embed_paths(params.paths.pool, kept["path"].to_list(), emb, 256, True, spec)
        x = np.ascontiguousarray(x[ok], dtype=np.float32)
        rows = []
        for s in range(args.seeds):
            res = hierarchical_kmeans(
                x,
                c.levels,
                n_iter=c.n_iter,
                n_resampling_steps=c.n_resampling_steps,
                max_points_per_centroid=c.max_points_per_centroid,
                tol=c.tol,
                seed=s,
            )
            idx = balanced_sample(res, target, strategy="random", seed=s)
            rows.append(_quality(y[ok][idx], n_classes))
        results[f"curated[{spec}]"] = _mean(rows)
    res = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "wall_s": time.time() - t0,
        "n_pool_after_dedup": len(y),
        "sample_size": target,
        "seeds": args.seeds,
        "cluster": c.model_dump(),
        "results": results,
    }
    out = ROOT / "benchmarks" / "results"
    write_json(out / "curation_demo.json", res)
    lines = [
        "# Curation quality on the demo pool (real images, labels known)",
        "",
        f"- command: `{res['command']}`; {res['machine']}; {res['date']}; wall {res['wall_s']:.0f} s",
        f"- {len(y)} pool images after dedup, {n_classes} classes (Zipf-imbalanced by "
        f"`demo.imbalance_ratio`); sample = {target} images ({args.fraction:.0%}); "
        f"cluster levels {c.levels}, {c.n_resampling_steps} resampling rounds; "
        f"mean ± std over {args.seeds} seeds (clustering and sampling seed)",
        "",
        "| subset | classes covered | largest class share | class entropy (1 = uniform) "
        "| max/min |",
        "|---|---|---|---|---|",
    ]
    for name, q in results.items():
        lines.append(
            f"| {name} | {q['covered']:.1f} / {n_classes} | {q['largest_share']:.3f}"
            f"{_sd(q, 'largest_share')} | {q['entropy_normalised']:.3f}{_sd(q, 'entropy_normalised')} "
            f"| {q['max_min_ratio']:.1f} |"
        )
    (out / "curation_demo.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
