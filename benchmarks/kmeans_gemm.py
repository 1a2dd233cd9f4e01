"""The GEMM-shaped work of curation k-means, by library, on this CPU (issue 19's speed lead).

Curation's time is in two distance computations (``benchmarks/results/curation.md``: greedy
k-means++ ~58 %, Lloyd ~31 % at 50k points): the nearest of k centroids for every point
(``faiss.IndexFlatL2.search``, inside ``faiss.Kmeans`` and ``kmeans.assign``) and the distances
of every point to a few k-means++ candidates (``faiss.pairwise_distances``). This times those
two shapes side by side in one process: faiss as the project calls it, and the same result from
a chunked BLAS matrix product (numpy fp32, torch fp32, torch bf16) plus an argmin. Agreement:
the share of points given the same centroid as faiss, and the worst relative excess of the
squared distance to the centroid picked (0 when every pick is a true nearest centroid).

Usage::

    .venv/bin/python benchmarks/kmeans_gemm.py              # ~2 min on 2 cores
    .venv/bin/python benchmarks/kmeans_gemm.py --n 300000 --k 6000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "results" / "kmeans_gemm"
LIBS = ("numpy", "torch_fp32", "torch_bf16")  # compared with faiss
CHUNK = 16384  # rows per product: a (CHUNK, k) fp32 block stays ~130 MB at k = 2000


def faiss_assign(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(c)
    return index.search(x, 1)[1][:, 0]


def blas_assign(x: np.ndarray, c: np.ndarray, lib: str) -> np.ndarray:
    """argmin_j ||x - c_j||^2 = argmin_j (||c_j||^2 - 2 x.c_j), chunk by chunk."""
    out = np.empty(len(x), dtype=np.int64)
    if lib == "numpy":
        cn = (c * c).sum(1)
        for s in range(0, len(x), CHUNK):
            out[s : s + CHUNK] = (cn - 2.0 * (x[s : s + CHUNK] @ c.T)).argmin(1)
        return out
    dtype = torch.bfloat16 if lib == "torch_bf16" else torch.float32
    ct = torch.from_numpy(c)
    cb, cn = ct.to(dtype), (ct * ct).sum(1)
    xt = torch.from_numpy(x)
    for s in range(0, len(x), CHUNK):
        dots = (xt[s : s + CHUNK].to(dtype) @ cb.T).float()
        out[s : s + CHUNK] = (cn - 2.0 * dots).argmin(1).numpy()
    return out


def faiss_pairwise(x: np.ndarray, cand: np.ndarray) -> np.ndarray:
    return faiss.pairwise_distances(x, cand)


def blas_pairwise(x: np.ndarray, cand: np.ndarray, lib: str) -> np.ndarray:
    xn = (x * x).sum(1, keepdims=True)
    cn = (cand * cand).sum(1)
    if lib == "numpy":
        return xn + cn - 2.0 * (x @ cand.T)
    dtype = torch.bfloat16 if lib == "torch_bf16" else torch.float32
    dots = (torch.from_numpy(x).to(dtype) @ torch.from_numpy(cand).to(dtype).T).float()
    return xn + cn - 2.0 * dots.numpy()


def best_of(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def mixture(n: int, d: int, comps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(comps, d)).astype(np.float32)
    return centres[rng.integers(0, comps, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)


def run(n: int, d: int, k: int, candidates: int, repeats: int, seed: int) -> dict:
    x = mixture(n, d, k, seed)
    rng = np.random.default_rng(seed + 1)
    c = x[rng.choice(n, k, replace=False)] + 0.01 * rng.normal(size=(k, d)).astype(np.float32)
    cand = x[rng.choice(n, candidates, replace=False)]
    t_ref, ref = best_of(lambda: faiss_assign(x, c), repeats)
    ref_d = ((x - c[ref]) ** 2).sum(1)
    rows = {"assign": {"faiss": {"s": round(t_ref, 3)}}}
    for lib in LIBS:
        t, a = best_of(lambda lib=lib: blas_assign(x, c, lib), repeats)
        excess = (((x - c[a]) ** 2).sum(1) - ref_d) / np.maximum(ref_d, 1e-12)
        rows["assign"][lib] = {"s": round(t, 3), "speedup": round(t_ref / t, 2),
                               "same_pick": round(float(np.mean(a == ref)), 5),
                               "max_rel_excess": float(excess.max())}  # fmt: skip
    t_ref, ref = best_of(lambda: faiss_pairwise(x, cand), repeats)
    rows["pairwise"] = {"faiss": {"s": round(t_ref, 4)}}
    for lib in LIBS:
        t, p = best_of(lambda lib=lib: blas_pairwise(x, cand, lib), repeats)
        rel = np.abs(p - ref).max() / float(np.abs(ref).max())
        rows["pairwise"][lib] = {"s": round(t, 4), "speedup": round(t_ref / t, 2),
                                 "max_abs_err_rel_to_max": float(rel)}  # fmt: skip
    return rows


def _table(head: str, faiss_row: str, rows: list[str]) -> list[str]:
    cols = head.count("|") - 1
    return ["", head, "|" + "---|" * cols, faiss_row, *rows]


def markdown(res: dict) -> str:
    a, p = res["rows"]["assign"], res["rows"]["pairwise"]
    assign = [
        f"| {lib} chunked product + argmin | {a[lib]['s']} | {a[lib]['speedup']} | "
        f"{100 * a[lib]['same_pick']:.3f} % | {a[lib]['max_rel_excess']:.2e} |"
        for lib in LIBS
    ]
    pairwise = [
        f"| {lib} | {p[lib]['s']} | {p[lib]['speedup']} | {p[lib]['max_abs_err_rel_to_max']:.1e} |"
        for lib in LIBS
    ]
    lines = [
        "# Curation k-means: its two distance computations, by library",
        "",
        f"`{res['command']}` on {res['machine']}, {res['date']}; faiss {res['faiss']}, "
        f"torch {res['torch']}, numpy {res['numpy']}; {res['threads']} threads each; best of "
        f"{res['repeats']}.",
        "",
        f"**Nearest centroid** of {res['n']:,} points among k = {res['k']:,} (d = {res['d']}):",
        *_table(
            "| method | s | vs faiss | same centroid as faiss | worst relative distance excess |",
            f"| faiss IndexFlatL2.search (the project) | {a['faiss']['s']} | 1.00 | - | - |",
            assign,
        ),
        "",
        f"**k-means++ round**: squared distances of {res['n']:,} points to {res['candidates']} "
        "candidates:",
        *_table(
            "| method | s | vs faiss | worst abs. error / largest distance |",
            f"| faiss.pairwise_distances (the project) | {p['faiss']['s']} | 1.00 | - |",
            pairwise,
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=2000)
    ap.add_argument("--candidates", type=int, default=36, help="greedy k-means++: ~2 + ln k")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    res = {
        "command": "python benchmarks/kmeans_gemm.py"
        + "".join(f" --{k} {v}" for k, v in (("n", a.n), ("k", a.k)) if v != ap.get_default(k)),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "faiss": faiss.__version__, "torch": torch.__version__, "numpy": np.__version__,
        "threads": a.threads, "repeats": a.repeats, "n": a.n, "d": a.d, "k": a.k,
        "candidates": a.candidates,
        "rows": run(a.n, a.d, a.k, a.candidates, a.repeats, a.seed),
    }  # fmt: skip
    print(markdown(res))
    if not a.no_write:
        OUT.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
        OUT.with_suffix(".md").write_text(markdown(res))


if __name__ == "__main__":
    main()
