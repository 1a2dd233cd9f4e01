"""Teacher quality over a longer run: kNN top-1 curve against the raw-pixel baseline.

Trains the ``teacher`` recipe from ``params.yaml`` on the demo's curated set (run
``make demo`` first), with overrides, probing kNN top-1 (k=20, the report's protocol) on the
eval set every ``--knn-every`` steps. The raw-pixel baseline is scored by the same probe code.

Usage::

    .venv/bin/python benchmarks/teacher_knn.py --name long_cpu --epochs 40 \\
        --set image_size=28 --knn-every 250
    .venv/bin/python benchmarks/teacher_knn.py --name smoke --max-steps 20 --knn-every 10
    .venv/bin/python benchmarks/teacher_knn.py --name kept --train-set kept ...  # no curation

``--max-steps N`` squeezes the whole recipe (warm-ups, cosine schedules) into N steps; it is not
the first N steps of the ``--epochs`` run.

Writes ``benchmarks/results/teacher_knn_<name>.{json,md}`` (``--out DIR``: into DIR);
checkpoints go to ``benchmarks/runs/<name>/`` (git-ignored; ``--runs DIR``: DIR/<name>/), so an
interrupted run resumes where it stopped.
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from ssl_core import sizing  # noqa: E402
from ssl_core.config import TrainConfig, load_params, parse_overrides  # noqa: E402
from ssl_core.curation.embed import PixelEmbedder  # noqa: E402
from ssl_core.data.eval_set import load_eval_set  # noqa: E402
from ssl_core.eval.probe import knn_eval, make_knn_probe  # noqa: E402
from ssl_core.stages.curate import CURATED  # noqa: E402
from ssl_core.train.teacher import train_teacher  # noqa: E402
from ssl_core.utils.atomic import write_json  # noqa: E402

K = 20


def _override(cfg: TrainConfig, pairs: list[str], epochs: int | None, max_steps: int | None):
    try:
        upd = parse_overrides(pairs, TrainConfig)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if epochs is not None:
        upd["epochs"] = epochs
    if max_steps is not None:
        upd["max_steps"] = max_steps
    return TrainConfig.model_validate({**cfg.model_dump(), **upd}), upd


def _md(res: dict) -> str:
    s = res["settings"]
    lines = [
        f"# Teacher kNN over a longer CPU run: `{res['name']}`",
        "",
        f"- command: `{res['command']}`",
        f"- machine: {res['machine']}; date {res['date']}; wall {res['wall_s']:.0f} s",
        f"- data: demo {res.get('train_set', 'curated')} set ({res['n_train']} images), eval "
        "bank/query of "
        f"`{res['eval_dir']}`; kNN k={K}, T={res['temperature']}, cosine on the EMA teacher's "
        "final-norm CLS token",
        f"- overrides of params.yaml `train:`: `{json.dumps(res['overrides'])}`",
        f"- recipe: preset {s['preset']}, {s['image_size']} px, batch {s['batch_size']}, "
        f"{s['n_local_crops']} local crops, lr {s['lr']}, out_dim {s['out_dim']}, "
        f"centering {s['centering']}, layer-scale init {s['layerscale_init']}",
        "",
        "| model | steps | images seen | kNN top-1 |",
        "|---|---|---|---|",
        f"| raw pixels ({res['pixel_size']} px) | - | - | {res['raw_pixels'] * 100:.1f} % |",
    ]
    for pt in res["curve"]:
        lines.append(f"| teacher | {pt['step']} | {pt['images']} | {pt['knn_top1'] * 100:.1f} % |")
    verdict = "beats" if res["final_knn"] > res["raw_pixels"] else "does not beat"
    lines += [
        "",
        f"Final teacher {res['final_knn'] * 100:.1f} % {verdict} the raw-pixel baseline "
        f"{res['raw_pixels'] * 100:.1f} % ({res['summary']['images_per_s']:.1f} img/s).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="run name (results/teacher_knn_<name>.*)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--knn-every", type=int, default=250)
    ap.add_argument("--set", action="append", default=[], help="train: override key=value")
    ap.add_argument(
        "--train-set", choices=("curated", "kept"), default="curated",
        help="curated manifest (the pipeline's), or every image kept by dedup",
    )  # fmt: skip
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results",
        help="folder for teacher_knn_<name>.{json,md} (default: benchmarks/results)",
    )  # fmt: skip
    ap.add_argument(
        "--runs", type=Path, default=ROOT / "benchmarks" / "runs",
        help="folder of the run directories <runs>/<name>/ (default: benchmarks/runs)",
    )  # fmt: skip
    args = ap.parse_args()

    params = load_params(args.params)
    cfg, overrides = _override(params.train, args.set, args.epochs, args.max_steps)
    cfg = cfg.model_copy(update={"knn_every": args.knn_every})
    if args.train_set == "curated":
        train_file = Path(params.paths.curated_dir) / CURATED
    else:
        train_file = Path(params.paths.dedup_dir) / "kept.parquet"
    if not train_file.exists():
        raise SystemExit(f"{train_file} is missing: run `make demo` (or the pipeline) first")
    paths = pl.read_parquet(train_file)["path"].to_list()
    cfg = sizing.resolve_epochs(cfg, len(paths), sizing.TEACHER_IMAGES, "train")
    eval_set, temp = load_eval_set(params), params.eval.temperature  # written by `sslops manifest`

    raw = knn_eval(PixelEmbedder(params.embed.image_size), eval_set, ks=(K,), temperature=temp)
    out = args.runs / args.name
    t0 = time.perf_counter()
    summary = train_teacher(
        cfg,
        Path(params.paths.pool),
        paths,
        out,
        knn_probe=make_knn_probe(eval_set, cfg.image_size, k=K, temperature=temp),
        resume=True,
        progress=not args.quiet,
    )
    wall = time.perf_counter() - t0
    curve = [
        json.loads(ln)
        for ln in (out / "metrics.jsonl").read_text().splitlines()
        if "knn_top1" in ln
    ]
    curve = [{**c, "images": c["step"] * cfg.batch_size} for c in curve]
    curve.append(
        {
            "step": summary["steps"],
            "images": summary["images_seen"],
            "knn_top1": summary["knn_top1"],
        }
    )
    res = {
        "name": args.name,
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, device {summary['device']}",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_s": wall,
        "n_train": len(paths),
        "train_set": args.train_set,
        "eval_dir": str(eval_set.root),
        "temperature": temp,
        "pixel_size": params.embed.image_size,
        "overrides": overrides,
        "settings": cfg.model_dump(mode="json"),
        "raw_pixels": raw[K],
        "curve": curve,
        "final_knn": summary["knn_top1"],
        "summary": summary,
    }
    dst = args.out
    dst.mkdir(parents=True, exist_ok=True)
    write_json(dst / f"teacher_knn_{args.name}.json", res)
    (dst / f"teacher_knn_{args.name}.md").write_text(_md(res))
    print(_md(res))


if __name__ == "__main__":
    main()
