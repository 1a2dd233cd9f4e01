"""Head diagnostics of finished ``teacher_knn.py`` runs, side by side, with their kNN curves.

For each run name, loads ``benchmarks/runs/<name>/`` (model + head) and
``benchmarks/results/teacher_knn_<name>.json`` (the kNN curve), scores the DINO head on 256
eval images with :func:`ssl_core.eval.head_diagnostics.head_diagnostics` and writes one table to
``benchmarks/results/teacher_head_<out>.{json,md}``.

Usage::

    .venv/bin/python benchmarks/teacher_head.py --out probes p_t04 p_noibot long_cpu_p7
    .venv/bin/python benchmarks/teacher_head.py --out probes_m90 --notes notes.md p_geo ...
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ssl_core.config import load_params  # noqa: E402
from ssl_core.data.eval_set import load_eval_set  # noqa: E402
from ssl_core.eval.head_diagnostics import head_diagnostics  # noqa: E402
from ssl_core.eval.probe import sample_eval_images  # noqa: E402
from ssl_core.train.distill import load_teacher  # noqa: E402
from ssl_core.utils.atomic import write_json, write_text  # noqa: E402


def _row(name: str, eval_set, n: int) -> dict:
    run = ROOT / "benchmarks" / "runs" / name
    net, cfg = load_teacher(run)
    size = cfg["train"]["image_size"]
    res_path = ROOT / "benchmarks" / "results" / f"teacher_knn_{name}.json"
    knn = json.loads(res_path.read_text()) if res_path.is_file() else {}
    return {
        "name": name,
        "overrides": knn.get("overrides", {}),
        "curve": [(p["step"], p["knn_top1"]) for p in knn.get("curve", [])],
        "diagnostics": head_diagnostics(net, sample_eval_images(eval_set, size, n)),
    }


def _split_overrides(rows: list[dict]) -> tuple[dict, list[dict]]:
    """Overrides shared by every run (shown once) and each run's own ones."""
    runtime = {"num_threads", "log_every", "checkpoint_every"}  # no effect on the numbers
    ovs = [{k: v for k, v in r["overrides"].items() if k not in runtime} for r in rows]
    common = {k: v for k, v in ovs[0].items() if all(o.get(k, object()) == v for o in ovs)}
    return common, [{k: v for k, v in o.items() if k not in common} for o in ovs]


def _md(meta: dict, rows: list[dict]) -> str:
    common, own = _split_overrides(rows)
    lines = [
        "# DINO head diagnostics of teacher runs",
        "",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']}; date {meta['date']}",
        f"- {meta['n_images']} eval query images; definitions in "
        "`ssl_core/eval/head_diagnostics.py` (weak-dir energy: share of the bottleneck z in the "
        "2 directions the prototypes use least; random = 2/d)",
        f"- overrides of params.yaml `train:` shared by all runs: `{json.dumps(common)}`",
        "",
        "| run | overrides | kNN curve (step: top-1) | weak-dir energy (random) | cos z | "
        "cos CLS | score std across images | entropy / log K at T=0.07 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r, ov in zip(rows, own, strict=True):
        d = r["diagnostics"]
        curve = ", ".join(f"{s}: {a * 100:.1f}" for s, a in r["curve"]) or "-"
        lines.append(
            f"| {r['name']} | `{json.dumps(ov)}` | {curve} | "
            f"{d['weak_dir_energy']:.2f} ({d['weak_dir_energy_random']:.3f}) | {d['cos_z']:.2f} | "
            f"{d['cos_cls']:.2f} | {d['logit_std_across_images']:.3f} | "
            f"{d['entropy_ratio']['0.07']:.3f} |"
        )
    return "\n".join(lines + [""] + [f"{n}" for n in meta.get("notes", [])]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help="run names under benchmarks/runs/")
    ap.add_argument("--out", required=True, help="results/teacher_head_<out>.{json,md}")
    ap.add_argument("--n-images", type=int, default=256)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--notes", type=Path, help="markdown file appended under the table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    eval_set = load_eval_set(load_params(args.params))  # written by `sslops manifest`
    rows = [_row(n, eval_set, args.n_images) for n in args.names]
    meta = {
        "command": "python benchmarks/teacher_head.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, CPU",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "n_images": args.n_images,
    }
    if args.notes:
        meta["notes"] = args.notes.read_text().splitlines()
    out = ROOT / "benchmarks" / "results" / f"teacher_head_{args.out}"
    write_json(out.with_suffix(".json"), {"meta": meta, "rows": rows})
    write_text(out.with_suffix(".md"), _md(meta, rows))
    print(_md(meta, rows))


if __name__ == "__main__":
    main()
