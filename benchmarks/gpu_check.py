"""Everything the GPU must prove, in one prepared run: ``gpu_check``.

On the day (a fresh machine with one CUDA GPU, this repository checked out)::

    bash benchmarks/gpu_check.sh              # make setup (CUDA torch + faiss-gpu), then this

and commit ``benchmarks/results/gpu_check_gpu.{json,md}``. Nothing else needs deciding: every
size is fixed here, every step runs in its own subprocess under its own wall-clock cap (its
process group is killed at the cap, the step is recorded as "timed out after N s" with whatever
partial numbers exist, and the next step runs), the total stays within ``--budget-s`` (default
480 s), and the result files are rewritten (atomically) after every step, so a run killed
half-way still leaves its results. The same script runs end to end on CPU with tiny sizes
(``--dry-run``, written to ``gpu_check_cpu.{json,md}``; CI runs it:
``tests/integration/test_gpu_check_dry_run.py``).

Steps (cap in seconds):

1. ``environment`` (30): date (UTC), command line, hostname, GPU name / driver / memory
   (``nvidia-smi``), torch / CUDA / cuDNN versions, faiss version and GPUs it sees, CPU count.
2. ``train_step`` (200): ``benchmarks/train_step.py --device cuda`` for ViT-S/14 (``small``)
   and ViT-B/14 (``base``), 2 x 224 + 8 x 98 crops, bf16 autocast, one subprocess per preset:
   packed and naive img/s and their ratio, MFU against the device's bf16 peak
   (``ssl_core/train/flops.py``; null when the device is not in its table), peak CUDA memory,
   first-step loss agreement of the two paths (train_step.py asserts it).
3. ``kmeans`` (120): hierarchical k-means (levels [2000, 200, 50], resampling [0, 10, 10],
   <= 20 Lloyd iterations: ``benchmarks/curation.py``'s 1e6 configuration) on 1e6 x 384
   synthetic embeddings (``hierarchical_mixture``), once on the GPU (torch CUDA GEMMs) and once
   forced onto the CPU (``SSLOPS_FAISS_GPU=0``), each in its own subprocess: seconds, speed-up.
4. ``demo_pool`` (60): builds the demo pool in a scratch project (its own ``params.yaml``,
   ``sslops raw_pool manifest embeddings dedup clusters curated`` with that cwd) and scores the
   raw-pixel kNN baseline on its eval set.
5. ``teacher`` (150): ``benchmarks/teacher_knn.py`` (the ``params.yaml`` recipe) on that
   curated pool for enough steps to see >= 1e6 image views (images x crops per image), kNN
   top-1 every ~1/5 of the steps; at the cap the curve logged so far (``metrics.jsonl``) is
   reported. Views, steps, img/s, the kNN curve and whether it beats the raw-pixel baseline.

The caps add up to 560 s: a step's cap is cut to what is left of ``--budget-s``, so the budget
holds even when every step runs to its cap (typically environment takes ~5 s and demo_pool
~25 s). Within train_step the first preset gets at most 45 % of the cap (packed on CUDA is
the compiled flex-attention path: its first steps, untimed, include the compilation).

The results list the issue's goals next to the measured values: packed >= 1.3x naive img/s
(S/14 and B/14), >= 40 % MFU on B/14 bf16, GPU k-means >= 10x CPU at 1e6, teacher kNN >
raw-pixel kNN.

Usage::

    .venv/bin/python benchmarks/gpu_check.py                    # on the GPU machine
    .venv/bin/python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_dry   # CPU, ~1.5 min
    .venv/bin/python benchmarks/gpu_check.py --only kmeans      # rerun one step, keep others

``--only`` keeps the other steps' results from the existing result file in ``--out``
(environment always runs; ``teacher`` brings ``demo_pool`` along).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
STEP_CAPS: dict[str, float] = {
    "environment": 30.0,
    "train_step": 200.0,
    "kmeans": 120.0,
    "demo_pool": 60.0,
    "teacher": 150.0,
}
TARGET_VIEWS = 1_000_000  # image views (images x crops per image) the teacher should see
KNN_POINTS = 5  # kNN probes over the teacher run
KNN_K = 20  # teacher_knn.py's (and the report's) kNN protocol
MIN_CAP_S = 5.0  # a step with less budget left is skipped
# dry run: params.yaml overrides for a ~270-image demo pool. "demo" repeats
# ssl_core.data.demo_pool.TINY_DEMO (a test keeps them equal): this orchestrator imports no
# project module, so it starts and records the environment even where dependencies are missing.
TINY_DEMO = {
    "demo": {
        "max_per_class": 60,
        "imbalance_ratio": 10,
        "exact_duplicates": 10,
        "near_duplicates": 10,
        "broken_files": 4,
        "eval_bank_per_class": 20,
        "eval_query_per_class": 10,
    },
    "cluster": {"levels": [12, 4]},
    "curate": {"target_size": 80, "min_cluster_entropy": 0.5},
}
DEMO_STAGES = ("raw_pool", "manifest", "embeddings", "dedup", "clusters", "curated")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one mode (GPU run or CPU dry run)."""

    device: str
    presets: tuple[str, ...]
    train_step_args: tuple[str, ...]
    kmeans_n: int
    kmeans_dim: int
    kmeans_levels: tuple[int, ...]
    kmeans_resampling: tuple[int, ...]
    kmeans_n_iter: int
    demo_overrides: dict[str, dict[str, Any]]
    teacher_steps: int | None  # None: enough for TARGET_VIEWS


GPU_PLAN = Plan(
    device="cuda",
    presets=("small", "base"),
    train_step_args=("--memory-steps", "2"),  # batch 64, 5 warm-up + 5 x 10 timed steps per path
    kmeans_n=1_000_000,
    kmeans_dim=384,
    kmeans_levels=(2000, 200, 50),
    kmeans_resampling=(0, 10, 10),
    kmeans_n_iter=20,
    demo_overrides={},
    teacher_steps=None,
)
DRY_PLAN = Plan(
    device="cpu",
    presets=("tiny",),
    train_step_args=("--steps", "1", "--repeats", "1", "--warmup", "1", "--memory-steps", "0"),
    kmeans_n=20_000,
    kmeans_dim=32,
    kmeans_levels=(50, 10),
    kmeans_resampling=(0, 2),
    kmeans_n_iter=20,
    demo_overrides=TINY_DEMO,
    teacher_steps=3,
)


@dataclasses.dataclass
class Ctx:
    """What every step needs: the plan, folders, environment and the results so far."""

    plan: Plan
    dry_run: bool
    scratch: Path
    env: dict[str, str]
    steps: dict[str, dict[str, Any]]
    command: str = ""


@dataclasses.dataclass
class Proc:
    """Outcome of one capped subprocess."""

    rc: int | None
    timed_out: bool
    seconds: float
    cap_s: float
    stdout: str
    stderr: str


# ----------------------------------------------------------------------------- subprocesses
def _kill_group(p: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the process group of ``p`` (if ``p`` still runs), then SIGKILL what is left of
    the group after ``grace_s`` (a finished ``p`` may leave children behind)."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def run_capped(
    cmd: list[str],
    cap_s: float,
    log: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    """Run ``cmd`` in its own process group; kill the group after ``cap_s`` seconds.

    stdout / stderr go to ``log``.out / ``log``.err (full) and come back as text.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    out_p, err_p = log.with_suffix(".out"), log.with_suffix(".err")
    t0 = time.monotonic()
    timed_out = False
    with out_p.open("w") as fo, err_p.open("w") as fe:
        p = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            p.wait(timeout=max(cap_s, 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:  # also on KeyboardInterrupt / SIGTERM: never leave the child running
            _kill_group(p)
    return Proc(
        None if timed_out else p.returncode,
        timed_out,
        time.monotonic() - t0,
        cap_s,
        out_p.read_text(errors="replace"),
        err_p.read_text(errors="replace"),
    )


def outcome(p: Proc, what: str = "") -> tuple[str, str]:
    """``(status, detail)`` of a subprocess: ok / timed out / failed with stderr's last lines."""
    pre = f"{what}: " if what else ""
    if p.timed_out:
        return "timed out", f"{pre}timed out after {p.cap_s:.0f} s"
    if p.rc != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-8:])
        return "failed", f"{pre}exit {p.rc}: {tail}"
    return "ok", ""


def last_json(text: str) -> dict[str, Any] | None:
    """The last stdout line that parses as a JSON object."""
    for ln in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            obj = json.loads(ln)
            if isinstance(obj, dict):
                return obj
    return None


def worker_cmd(name: str, job: dict[str, Any]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", name, json.dumps(job)]


def left(deadline: float) -> float:
    return deadline - time.monotonic()


# ----------------------------------------------------------------------------- workers
def _nvidia_smi() -> list[dict[str, str]] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    q = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        res = subprocess.run(q, capture_output=True, text=True, timeout=20, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        return [{"error": repr(e)}]
    rows = [[c.strip() for c in ln.split(",")] for ln in res.stdout.strip().splitlines()]
    return [dict(zip(("name", "driver", "memory"), r, strict=False)) for r in rows]


def worker_environment(_job: dict[str, Any]) -> dict[str, Any]:
    """Machine, GPU, torch and faiss facts (module imports happen here, not in the parent)."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "nvidia_smi": _nvidia_smi(),
    }
    import torch

    cuda = torch.cuda.is_available()
    info.update(
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if cuda else None,
        cuda_available=cuda,
        cuda_device=torch.cuda.get_device_name(0) if cuda else None,
    )
    try:
        from ssl_core.train.flops import device_peak_tflops

        info["bf16_peak_tflops"] = device_peak_tflops(torch.device("cuda")) if cuda else None
    except Exception as e:  # the MFU table is someone else's module: report, do not fail
        info["bf16_peak_tflops_error"] = repr(e)
    try:  # faiss may be missing (e.g. the offline lent machine): record it, do not fail
        import faiss

        info.update(faiss=faiss.__version__, faiss_gpus=faiss.get_num_gpus())
    except ImportError as e:
        info.update(faiss=None, faiss_gpus=0, faiss_error=repr(e))
    return info


def worker_kmeans_data(job: dict[str, Any]) -> dict[str, Any]:
    """Synthetic embeddings shaped like real ones (``hierarchical_mixture``), saved as .npy."""
    import numpy as np

    from ssl_core.curation.synthetic import hierarchical_mixture

    t = time.perf_counter()
    x, _ = hierarchical_mixture(job["n"], dim=job["dim"], seed=0)
    np.save(job["path"], x)
    return {"n": len(x), "dim": int(x.shape[1]), "generate_s": time.perf_counter() - t}


def worker_hkmeans(job: dict[str, Any]) -> dict[str, Any]:
    """Hierarchical k-means on the saved data, on CUDA or the CPU as ``nearest.device()``
    decides (torch GEMMs; ``SSLOPS_FAISS_GPU=0`` forces the CPU)."""
    import numpy as np

    from ssl_core.curation.hkmeans import hierarchical_kmeans
    from ssl_core.curation.kmeans import kmeans_with_distances
    from ssl_core.curation.nearest import device

    gpu = device().type == "cuda"
    out: dict[str, Any] = {"mode": job["mode"], "use_gpu": gpu}
    if job["mode"] == "gpu" and not gpu:
        return {**out, "skipped": "no GPU"}
    x = np.load(job["path"])
    t = time.perf_counter()  # one-off start-up (CUDA context, kernels), not timed below
    kmeans_with_distances(x[:2000], 8, n_iter=2, seed=0)
    out["warmup_s"] = time.perf_counter() - t
    t = time.perf_counter()
    res = hierarchical_kmeans(
        x, job["levels"], n_iter=job["n_iter"], n_resampling_steps=job["resampling"], seed=0
    )
    out["hkmeans_s"] = time.perf_counter() - t
    k0 = res.levels[0]
    out["level0_empty"] = int(k0 - len(np.unique(res.assignments[0])))
    out["level0_mean_sq_dist"] = float(np.mean(res.distances[0]))
    return out


def worker_raw_knn(job: dict[str, Any]) -> dict[str, Any]:
    """kNN top-1 (k=20) of raw pixels on the project's eval set (cwd = the project)."""
    from ssl_core.config import load_params
    from ssl_core.curation.embed import PixelEmbedder
    from ssl_core.data.eval_set import load_eval_set
    from ssl_core.eval.probe import knn_eval

    params = load_params(job["params"])
    evset = load_eval_set(params)
    if evset is None:
        raise SystemExit("the project has no eval set (no labels)")
    acc = knn_eval(
        PixelEmbedder(params.embed.image_size),
        evset,
        ks=(KNN_K,),
        temperature=params.eval.temperature,
    )
    return {
        "raw_pixels": acc[KNN_K],
        "k": KNN_K,
        "n_bank": len(evset.bank),
        "n_query": len(evset.query),
    }


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "environment": worker_environment,
    "kmeans-data": worker_kmeans_data,
    "hkmeans": worker_hkmeans,
    "raw-knn": worker_raw_knn,
}


# ----------------------------------------------------------------------------- steps
def step_environment(ctx: Ctx, deadline: float) -> dict[str, Any]:
    p = run_capped(
        worker_cmd("environment", {}), left(deadline), ctx.scratch / "logs" / "env", env=ctx.env
    )
    status, detail = outcome(p)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {
        "status": status,
        "detail": detail,
        "date": now,
        "command": ctx.command,
        **(last_json(p.stdout) or {}),
    }


def summarise_train_step(r: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one ``train_step.py`` preset result that the check reports."""
    mem = r.get("memory") or {}
    key = "cuda_peak_mb" if r["device"].startswith("cuda") else "rss_peak_mb"
    peak = {k: mem[k].get(key) for k in ("packed", "naive") if k in mem}
    mfu_note = (
        ""
        if r.get("peak_tflops")
        else f"no bf16 peak for device {r.get('device_name')!r} in ssl_core/train/flops.py"
    )
    keys = (
        "backbone",
        "device_name",
        "dtype",
        "batch",
        "global_px",
        "local_px",
        "n_local",
        "img_s_packed",
        "img_s_naive",
        "ratios",
        "tflops_packed",
        "tflops_naive",
        "mfu_packed",
        "mfu_naive",
        "peak_tflops",
        "loss_packed",
        "loss_naive",
        "loss_rel_diff",
        "steps",
        "repeats",
        "warmup",
        "throughput_wall_s",
    )
    out = {k: r.get(k) for k in keys}
    out.update(
        ratio=r["ratio_packed_over_naive"],
        peak_mem_mb=peak or None,
        mfu_note=mfu_note,
        loss_tol=2e-2 if r["device"].startswith("cuda") else 1e-4,
        loss_agree=True,
    )
    return out


def step_train_step(ctx: Ctx, deadline: float) -> dict[str, Any]:
    """``train_step.py`` per preset; the first gets <= 45 % of the cap, the last the rest."""
    presets: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    n = len(ctx.plan.presets)
    for i, name in enumerate(ctx.plan.presets):
        share = 1.0 if i == n - 1 else 0.45
        cap = left(deadline) * share
        out_dir = ctx.scratch / "train_step" / name
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [
            sys.executable,
            str(BENCH / "train_step.py"),
            "--device",
            ctx.plan.device,
            "--presets",
            name,
            "--out",
            str(out_dir),
            *ctx.plan.train_step_args,
        ]
        p = run_capped(cmd, cap, ctx.scratch / "logs" / f"train_step_{name}", env=ctx.env)
        status, detail = outcome(p, name)
        res_file = out_dir / f"train_step_{ctx.plan.device.split(':')[0]}.json"
        if status == "ok" and res_file.is_file():
            presets[name] = summarise_train_step(json.loads(res_file.read_text())["results"][0])
        else:
            problems.append((status if status != "ok" else "failed", detail or f"{name}: no JSON"))
            presets[name] = {"status": problems[-1][0], "detail": problems[-1][1]}
        presets[name]["seconds"] = p.seconds
    status, detail = problems[0] if problems else ("ok", "")
    return {
        "status": status,
        "detail": "; ".join(d for _, d in problems) or detail,
        "device": ctx.plan.device,
        "presets": presets,
    }


def _hkmeans_run(ctx: Ctx, mode: str, data: Path, cap: float) -> dict[str, Any]:
    """One capped hkmeans worker (``mode`` gpu or cpu); its result or its failure."""
    env = dict(ctx.env)
    env.pop("SSLOPS_FAISS_GPU", None)
    if mode == "cpu":
        env["SSLOPS_FAISS_GPU"] = "0"
    job = {
        "mode": mode,
        "path": str(data),
        "levels": list(ctx.plan.kmeans_levels),
        "resampling": list(ctx.plan.kmeans_resampling),
        "n_iter": ctx.plan.kmeans_n_iter,
    }
    p = run_capped(
        worker_cmd("hkmeans", job), cap, ctx.scratch / "logs" / f"kmeans_{mode}", env=env
    )
    status, detail = outcome(p, f"{mode} k-means")
    res = last_json(p.stdout) if status == "ok" else None
    return {"status": status, "detail": detail, "seconds": p.seconds, **(res or {})}


def kmeans_speedup(gpu: dict[str, Any], cpu: dict[str, Any]) -> dict[str, Any]:
    """CPU / GPU seconds; a lower bound when the CPU run hit its cap."""
    g = gpu.get("hkmeans_s")
    if g is None or g <= 0:
        return {"speedup": None, "speedup_lower_bound": None}
    if cpu.get("hkmeans_s") is not None:
        return {"speedup": cpu["hkmeans_s"] / g, "speedup_lower_bound": None}
    if cpu.get("status") == "timed out":  # CPU ran >= its cap (which includes load + warm-up)
        return {"speedup": None, "speedup_lower_bound": cpu["seconds"] / g}
    return {"speedup": None, "speedup_lower_bound": None}


def step_kmeans(ctx: Ctx, deadline: float) -> dict[str, Any]:
    """Data once (<= 40 % of the cap), then GPU (<= 40 % of the rest), then CPU (the rest)."""
    pl = ctx.plan
    data = ctx.scratch / "kmeans_x.npy"
    out: dict[str, Any] = {
        "n": pl.kmeans_n,
        "dim": pl.kmeans_dim,
        "levels": list(pl.kmeans_levels),
        "resampling_steps": list(pl.kmeans_resampling),
        "n_iter": pl.kmeans_n_iter,
    }
    try:
        job = {"n": pl.kmeans_n, "dim": pl.kmeans_dim, "path": str(data)}
        p = run_capped(
            worker_cmd("kmeans-data", job),
            left(deadline) * 0.4,
            ctx.scratch / "logs" / "kmeans_data",
            env=ctx.env,
        )
        status, detail = outcome(p, "data")
        if status != "ok":
            return {**out, "status": status, "detail": detail}
        out["generate_s"] = (last_json(p.stdout) or {}).get("generate_s")
        out["gpu"] = _hkmeans_run(ctx, "gpu", data, left(deadline) * 0.4)
        out["cpu"] = _hkmeans_run(ctx, "cpu", data, left(deadline))
    finally:
        data.unlink(missing_ok=True)
    out.update(kmeans_speedup(out["gpu"], out["cpu"]))
    return {**out, **_kmeans_status(ctx, out["gpu"], out["cpu"])}


def _kmeans_status(ctx: Ctx, gpu: dict[str, Any], cpu: dict[str, Any]) -> dict[str, str]:
    if gpu.get("skipped"):
        if not ctx.dry_run:
            return {"status": "failed", "detail": "torch sees no CUDA device for k-means"}
        gpu["status"] = f"skipped: {gpu['skipped']}"
    for r in (gpu, cpu):
        if r["status"] in ("failed", "timed out"):
            return {"status": r["status"], "detail": r["detail"]}
    return {"status": "ok", "detail": "GPU run skipped: no GPU" if gpu.get("skipped") else ""}


def scratch_params(repo_params: Path, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The repo's params with the demo as data source (whatever it points at now) + overrides."""
    params = yaml.safe_load(repo_params.read_text())
    params.setdefault("data", {})["source"] = "demo"
    params.setdefault("paths", {}).update(pool="data/demo/pool", labels="data/demo/eval")
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    return params


def step_demo_pool(ctx: Ctx, deadline: float) -> dict[str, Any]:
    """The demo pool in ``scratch/project`` (stage by stage) and its raw-pixel kNN."""
    proj = ctx.scratch / "project"
    if proj.exists():
        shutil.rmtree(proj)
    (proj / "data").mkdir(parents=True)
    params = proj / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            scratch_params(ROOT / "params.yaml", ctx.plan.demo_overrides), sort_keys=False
        )
    )
    out: dict[str, Any] = {"project": str(proj), "params": str(params), "stages": {}}
    base = [sys.executable, "-m", "ssl_core.cli", "--params", str(params), "--quiet"]
    for stage in DEMO_STAGES:
        p = run_capped(
            [*base, stage],
            left(deadline),
            ctx.scratch / "logs" / f"pool_{stage}",
            cwd=proj,
            env=ctx.env,
        )
        stats = last_json(p.stdout) or {}
        out["stages"][stage] = {
            "seconds": p.seconds,
            **{k: v for k, v in stats.items() if not isinstance(v, list | dict)},
        }
        status, detail = outcome(p, f"sslops {stage}")
        if status != "ok":
            return {**out, "status": status, "detail": detail}
    out["n_curated"] = out["stages"]["curated"].get("selected")
    p = run_capped(
        worker_cmd("raw-knn", {"params": str(params)}),
        left(deadline),
        ctx.scratch / "logs" / "pool_raw_knn",
        cwd=proj,
        env=ctx.env,
    )
    status, detail = outcome(p, "raw-pixel kNN")
    if status == "ok":
        out.update(last_json(p.stdout) or {})
    return {**out, "status": status, "detail": detail}


def teacher_schedule(
    params: dict[str, Any], n_train: int, fixed_steps: int | None
) -> dict[str, int]:
    """Steps for TARGET_VIEWS image views (or ``fixed_steps``), epochs to hold them, kNN interval."""
    t = params["train"]
    batch, crops = int(t["batch_size"]), 2 + int(t["n_local_crops"])
    steps = fixed_steps or math.ceil(TARGET_VIEWS / (batch * crops))
    per_epoch = n_train // batch
    if per_epoch < 1:
        raise ValueError(f"{n_train} curated images < one batch of {batch}")
    return {
        "batch": batch,
        "crops_per_image": crops,
        "views_per_step": batch * crops,
        "steps": steps,
        "epochs": math.ceil(steps / per_epoch),
        "knn_every": max(1, steps // KNN_POINTS),
    }


def parse_metrics(text: str) -> dict[str, Any]:
    """kNN points, last logged step and mean img/s from a (possibly cut-off) ``metrics.jsonl``.

    The trainer appends one line per ``log_every`` steps (``step``, losses, ``images_per_s``,
    ...) and one ``{"step": s, "knn_top1": a}`` line per kNN probe; a line torn by a kill is
    skipped.
    """
    curve: list[dict[str, Any]] = []
    last_step, rates = 0, []
    for ln in text.splitlines():
        try:
            rec = json.loads(ln)
        except ValueError:
            continue
        if not isinstance(rec, dict) or "step" not in rec:
            continue
        last_step = max(last_step, int(rec["step"]))
        if "knn_top1" in rec:
            curve.append({"step": int(rec["step"]), "knn_top1": float(rec["knn_top1"])})
        elif "images_per_s" in rec:
            rates.append(float(rec["images_per_s"]))
    return {
        "curve": curve,
        "last_step": last_step,
        "images_per_s": sum(rates) / len(rates) if rates else None,
    }


def teacher_result(run_dir: Path, res_file: Path, sched: dict[str, int]) -> dict[str, Any]:
    """Curve, steps, views and img/s from teacher_knn's JSON, else from the run's metrics."""
    if res_file.is_file():
        res = json.loads(res_file.read_text())
        s = res["summary"]
        curve = [{"step": c["step"], "knn_top1": c["knn_top1"]} for c in res["curve"]]
        out = {
            "partial": False,
            "steps_done": s["steps"],
            "images_per_s": s["images_per_s"],
            "raw_pixels": res["raw_pixels"],
            "device": s.get("device"),
            "teacher_wall_s": res["wall_s"],
        }
    else:
        m_file = run_dir / "metrics.jsonl"
        m = parse_metrics(m_file.read_text() if m_file.is_file() else "")
        curve = m["curve"]
        out = {"partial": True, "steps_done": m["last_step"], "images_per_s": m["images_per_s"]}
    for c in curve:
        c["images"] = c["step"] * sched["batch"]
        c["views"] = c["step"] * sched["views_per_step"]
    out.update(
        curve=curve,
        images_seen=out["steps_done"] * sched["batch"],
        views_seen=out["steps_done"] * sched["views_per_step"],
        final_knn=curve[-1]["knn_top1"] if curve else None,
    )
    return out


def step_teacher(ctx: Ctx, deadline: float) -> dict[str, Any]:
    """teacher_knn.py in the scratch project (cwd), results and runs under the scratch dir."""
    pool = ctx.steps.get("demo_pool", {})
    if pool.get("status") != "ok":
        return {"status": "failed", "detail": "demo pool not built (see step demo_pool)"}
    params = Path(pool["params"])
    sched = teacher_schedule(
        yaml.safe_load(params.read_text()), int(pool["n_curated"]), ctx.plan.teacher_steps
    )
    name = "gpu_check_dry" if ctx.dry_run else "gpu_check"
    shutil.rmtree(ctx.scratch / "teacher", ignore_errors=True)  # no resume of an older run
    res_dir, runs = ctx.scratch / "teacher" / "results", ctx.scratch / "teacher" / "runs"
    cmd = [
        sys.executable,
        str(BENCH / "teacher_knn.py"),
        "--name",
        name,
        "--params",
        str(params),
        "--epochs",
        str(sched["epochs"]),
        "--max-steps",
        str(sched["steps"]),
        "--knn-every",
        str(sched["knn_every"]),
        "--quiet",
        "--out",
        str(res_dir),
        "--runs",
        str(runs),
    ]
    p = run_capped(
        cmd,
        left(deadline),
        ctx.scratch / "logs" / "teacher",
        cwd=Path(pool["project"]),
        env=ctx.env,
    )
    status, detail = outcome(p)
    out = {
        "target_views": None if ctx.plan.teacher_steps else TARGET_VIEWS,
        **sched,
        "n_train": pool["n_curated"],
        **teacher_result(runs / name, res_dir / f"teacher_knn_{name}.json", sched),
    }
    out.setdefault("raw_pixels", pool.get("raw_pixels"))
    fk, raw = out["final_knn"], out["raw_pixels"]
    out["beats_raw"] = None if fk is None or raw is None else fk > raw
    return {**out, "status": status, "detail": detail}


STEPS: dict[str, Callable[[Ctx, float], dict[str, Any]]] = {
    "environment": step_environment,
    "train_step": step_train_step,
    "kmeans": step_kmeans,
    "demo_pool": step_demo_pool,
    "teacher": step_teacher,
}


# ----------------------------------------------------------------------------- goals
def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "fail")


def _rate(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _preset(steps: dict[str, Any], preset: str) -> tuple[dict[str, Any], str]:
    """A train_step preset's numbers, and " (preset X)" when it is not ViT-S/B (dry run)."""
    r = (steps.get("train_step") or {}).get("presets", {}).get(preset) or {}
    return r, "" if preset in ("small", "base") else f", preset {preset}"


def _packed_goal(steps: dict[str, Any], preset: str, label: str) -> dict[str, Any]:
    r, tag = _preset(steps, preset)
    goal = f"packed >= 1.3x naive img/s, {label}"
    if r.get("ratio") is None:
        return {"goal": goal, "measured": "not measured", "verdict": "n/a"}
    m = f"{r['ratio']:.2f}x ({_rate(r['img_s_packed'])} vs {_rate(r['img_s_naive'])} img/s{tag})"
    return {"goal": goal, "measured": m, "verdict": _verdict(r["ratio"] >= 1.3)}


def _mfu_goal(steps: dict[str, Any], preset: str) -> dict[str, Any]:
    r, tag = _preset(steps, preset)
    goal = ">= 40 % MFU, ViT-B/14 bf16 (packed)"
    if "mfu_packed" not in r:
        return {"goal": goal, "measured": "not measured", "verdict": "n/a"}
    if r["mfu_packed"] is None:
        return {"goal": goal, "measured": f"null ({r.get('mfu_note')}{tag})", "verdict": "n/a"}
    m = (
        f"{100 * r['mfu_packed']:.1f} % ({r['tflops_packed']:.0f} of {r['peak_tflops']:.0f} "
        f"TFLOP/s{tag})"
    )
    return {"goal": goal, "measured": m, "verdict": _verdict(r["mfu_packed"] >= 0.40)}


def _kmeans_goal(steps: dict[str, Any]) -> dict[str, Any]:
    k = steps.get("kmeans") or {}
    goal = "faiss GPU hierarchical k-means >= 10x CPU, 1e6 x 384"
    gpu, cpu = k.get("gpu") or {}, k.get("cpu") or {}
    if gpu.get("skipped"):
        return {"goal": goal, "measured": f"GPU run skipped: {gpu['skipped']}", "verdict": "n/a"}
    times = f"GPU {gpu.get('hkmeans_s', float('nan')):.1f} s, CPU "
    if k.get("speedup") is not None:
        m, ok = f"{k['speedup']:.1f}x ({times}{cpu['hkmeans_s']:.1f} s)", k["speedup"] >= 10
    elif k.get("speedup_lower_bound") is not None:
        lb = k["speedup_lower_bound"]
        m = f">= {lb:.1f}x ({times}timed out after {cpu['seconds']:.0f} s)"
        ok = True if lb >= 10 else None
    else:
        return {"goal": goal, "measured": "not measured", "verdict": "n/a"}
    if k.get("n") != 1_000_000:
        m, ok = f"{m} at {k.get('n'):,} x {k.get('dim')}", None
    return {"goal": goal, "measured": m, "verdict": _verdict(ok)}


def _teacher_goal(steps: dict[str, Any]) -> dict[str, Any]:
    t = steps.get("teacher") or {}
    goal = "teacher kNN top-1 > raw-pixel kNN top-1"
    if t.get("final_knn") is None or t.get("raw_pixels") is None:
        return {"goal": goal, "measured": "not measured", "verdict": "n/a"}
    m = (
        f"{100 * t['final_knn']:.1f} % vs {100 * t['raw_pixels']:.1f} % "
        f"(step {t['steps_done']}, {t['views_seen']:,} views{', partial' if t['partial'] else ''})"
    )
    return {"goal": goal, "measured": m, "verdict": _verdict(t["final_knn"] > t["raw_pixels"])}


def evaluate_goals(
    steps: dict[str, Any], presets: tuple[str, str] = ("small", "base")
) -> list[dict[str, Any]]:
    """The issue's goals, each with the measured value and pass / fail / n/a.

    ``steps`` is the result file's ``steps`` dict; ``presets`` are the train_step presets that
    stand for ViT-S/14 and ViT-B/14 (the dry run passes its tiny one for both).
    """
    return [
        _packed_goal(steps, presets[0], "ViT-S/14"),
        _packed_goal(steps, presets[1], "ViT-B/14"),
        _mfu_goal(steps, presets[1]),
        _kmeans_goal(steps),
        _teacher_goal(steps),
    ]


def goals_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`evaluate_goals` of a run; a dry run's verdicts are marked as such."""
    if not doc["dry_run"]:
        return evaluate_goals(doc["steps"])
    goals = evaluate_goals(doc["steps"], (DRY_PLAN.presets[0], DRY_PLAN.presets[0]))
    return [{**g, "verdict": f"dry run ({g['verdict']})"} for g in goals]


# ----------------------------------------------------------------------------- markdown
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _md_head(doc: dict[str, Any]) -> list[str]:
    env = doc["steps"].get("environment") or {}
    gpus = env.get("nvidia_smi") or []
    gpu = "; ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory')})" for g in gpus)
    title = "GPU check" + (" (dry run on CPU, tiny sizes)" if doc["dry_run"] else "")
    dry = (
        ["", "A dry run: tiny sizes on CPU exercise the script; its verdicts say nothing about "
         "the goals."] if doc["dry_run"] else []
    )  # fmt: skip
    return [
        f"# {title}",
        "",
        f"- command: `{doc['command']}`",
        f"- date: {doc['date']}; wall {doc['wall_s']:.0f} s of a {doc['budget_s']:.0f} s budget",
        f"- host: {env.get('hostname', '?')}, {env.get('cpu_count', '?')} CPUs; GPU: "
        f"{gpu or 'none (no nvidia-smi)'}",
        f"- torch {env.get('torch', '?')} (CUDA {_s(env.get('torch_cuda'))}, cuDNN "
        f"{_s(env.get('cudnn'))}, device {_s(env.get('cuda_device'))}, bf16 peak "
        f"{_s(env.get('bf16_peak_tflops'))} TFLOP/s); faiss {env.get('faiss', '?')} "
        f"({env.get('faiss_gpus', '?')} GPUs)",
        *dry,
        "",
        "## Goals",
        "",
        "| goal | measured | verdict |",
        "|---|---|---|",
        *[f"| {g['goal']} | {g['measured']} | **{g['verdict']}** |" for g in doc["goals"]],
        "",
        "## Steps",
        "",
        "| step | status | seconds (cap) | detail |",
        "|---|---|---|---|",
        *[_step_row(n, s) for n, s in doc["steps"].items()],
        "",
    ]


def _step_row(name: str, s: dict[str, Any]) -> str:
    kept = f" (kept from the run of {s['from_run']})" if s.get("from_run") else ""
    return (
        f"| {name} | {s.get('status')}{kept} | {_num(s.get('seconds'), '.0f')} "
        f"({_num(s.get('cap_s'), '.0f')}) | {_md_cell(s.get('detail') or '-')} |"
    )


def _s(x: object) -> str:
    return "-" if x is None else str(x)


def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:300]


def _md_train_step(ts: dict[str, Any]) -> list[str]:
    lines = [
        f"## train_step ({ts.get('device')}): packed vs naive `train_step`",
        "",
        "| preset | crops (px) | batch | img/s packed | img/s naive | packed / naive | MFU packed "
        "/ naive | peak mem packed / naive (MB) | first-step loss packed / naive (rel diff) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (ts.get("presets") or {}).items():
        if r.get("ratio") is None:
            lines.append(f"| {name} | {_md_cell(r.get('detail', ''))} | | | | | | | |")
            continue
        mem = r.get("peak_mem_mb") or {}
        memtxt = (
            f"{_num(mem.get('packed'), '.0f')} / {_num(mem.get('naive'), '.0f')}" if mem else "-"
        )
        lines.append(
            f"| {name} ({r['backbone']}, {r['dtype']}) | {r['global_px']} / {r['local_px']} x "
            f"{r['n_local']} | {r['batch']} | {r['img_s_packed']:.1f} | {r['img_s_naive']:.1f} | "
            f"{r['ratio']:.2f}x | {_pct(r['mfu_packed'])} / {_pct(r['mfu_naive'])} | {memtxt} | "
            f"{r['loss_packed']:.5f} / {r['loss_naive']:.5f} ({r['loss_rel_diff']:.1e} <= "
            f"{r['loss_tol']:.0e}) |"
        )
    notes = [r["mfu_note"] for r in (ts.get("presets") or {}).values() if r.get("mfu_note")]
    return [*lines, *(["", f"- MFU null: {notes[0]}"] if notes else []), ""]


def _md_kmeans(k: dict[str, Any]) -> list[str]:
    lines = [
        f"## kmeans: hierarchical k-means, {k.get('n', 0):,} x {k.get('dim')}, levels "
        f"{k.get('levels')}, resampling {k.get('resampling_steps')}",
        "",
        f"Synthetic data (`hierarchical_mixture`) generated in {_num(k.get('generate_s'))} s "
        "(not timed below). Time = `hierarchical_kmeans` after a small warm-up k-means.",
        "",
        "| run | status | time (s) | warm-up (s) | faiss GPUs / used | level-0 empty | "
        "level-0 mean sq. dist |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in ("gpu", "cpu"):
        r = k.get(mode) or {}
        lines.append(
            f"| {mode} | {_md_cell(r.get('status', '-'))} | {_num(r.get('hkmeans_s'))} | "
            f"{_num(r.get('warmup_s'))} | {r.get('faiss_gpus', '-')} / {r.get('use_gpu', '-')} | "
            f"{r.get('level0_empty', '-')} | {_num(r.get('level0_mean_sq_dist'), '.4f')} |"
        )
    sp, lb = k.get("speedup"), k.get("speedup_lower_bound")
    txt = f"{sp:.1f}x" if sp is not None else (f">= {lb:.1f}x" if lb is not None else "-")
    return [*lines, "", f"GPU / CPU speed-up: **{txt}**", ""]


PARTIAL = " (partial: up to the last step logged in metrics.jsonl before the cap)"


def _md_teacher(t: dict[str, Any], pool: dict[str, Any]) -> list[str]:
    tv = t.get("target_views")
    target = f"target {tv:,} views" if tv else "steps fixed for the dry run"
    stages = ", ".join(f"{s} {v['seconds']:.0f} s" for s, v in (pool.get("stages") or {}).items())
    lines = [
        "## teacher: kNN top-1 over a demo-recipe run",
        "",
        f"- demo pool: {stages}; {pool.get('n_curated')} curated images; eval bank "
        f"{pool.get('n_bank')} / query {pool.get('n_query')}",
        f"- plan: {t.get('steps')} steps of {t.get('batch')} images x {t.get('crops_per_image')} "
        f"crops = {t.get('views_per_step')} views per step ({target}), {t.get('epochs')} "
        f"epochs, kNN every {t.get('knn_every')} steps",
        f"- done: {t.get('steps_done')} steps, {t.get('images_seen', 0):,} images, "
        f"{t.get('views_seen', 0):,} views, {_num(t.get('images_per_s'))} img/s"
        f"{PARTIAL if t.get('partial') else ''}",
        "",
        "| model | step | images | views | kNN top-1 (k=20) |",
        "|---|---|---|---|---|",
        f"| raw pixels | - | - | - | {_pct(t.get('raw_pixels', pool.get('raw_pixels')))} |",
        *[
            f"| teacher | {c['step']} | {c['images']:,} | {c['views']:,} | {_pct(c['knn_top1'])} |"
            for c in t.get("curve") or []
        ],
    ]
    if t.get("beats_raw") is not None:
        verdict = "beats" if t["beats_raw"] else "does not beat"
        lines += [
            "",
            f"The teacher ({_pct(t['final_knn'])}) {verdict} raw pixels ({_pct(t['raw_pixels'])}).",
        ]
    return [*lines, ""]


def render_md(doc: dict[str, Any]) -> str:
    st = doc["steps"]
    lines = _md_head(doc)
    if "train_step" in st:
        lines += _md_train_step(st["train_step"])
    if "kmeans" in st:
        lines += _md_kmeans(st["kmeans"])
    if "teacher" in st or "demo_pool" in st:
        lines += _md_teacher(st.get("teacher") or {}, st.get("demo_pool") or {})
    lines += [
        "Full numbers: the .json next to this file (per step: `status`, `detail`, "
        "`seconds`, `cap_s`).",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver
def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_results(doc: dict[str, Any], out: Path) -> None:
    """JSON and markdown, each atomically; a bug in the goals or the markdown costs neither
    the JSON nor the other."""
    try:
        doc["goals"] = goals_of(doc)
    except Exception as e:
        doc["goals"] = [{"goal": "(goal evaluation failed)", "measured": repr(e), "verdict": "-"}]
    stem = out / f"gpu_check_{'cpu' if doc['dry_run'] else 'gpu'}"
    write_atomic(stem.with_suffix(".json"), json.dumps(doc, indent=1, default=str) + "\n")
    try:
        md = render_md(doc)
    except Exception:
        md = f"# GPU check\n\nmarkdown failed:\n\n```\n{traceback.format_exc()}```\n"
    write_atomic(stem.with_suffix(".md"), md)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["SSLOPS_NO_PROGRESS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_step(ctx: Ctx, name: str, cap: float) -> dict[str, Any]:
    """One step under ``cap`` seconds; a crash of this script's own code is a failed step."""
    t0 = time.monotonic()
    if cap < MIN_CAP_S:
        return {"status": "skipped", "detail": "budget spent", "seconds": 0.0, "cap_s": cap}
    try:
        res = STEPS[name](ctx, t0 + cap)
    except Exception as e:
        tail = "".join(traceback.format_exception(e)[-3:])
        res = {"status": "failed", "detail": f"gpu_check error: {tail}"}
    return {**res, "seconds": time.monotonic() - t0, "cap_s": cap}


def run_all(args: argparse.Namespace, command: str) -> dict[str, Any]:
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    scratch.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "dry_run": args.dry_run,
        "command": command,
        "budget_s": args.budget_s,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scratch": str(scratch),
        "step_caps_s": STEP_CAPS,
        "wall_s": 0.0,
        "steps": {},
        "goals": [],
    }
    previous, only = _previous_steps(args), _only(args.only)
    ctx = Ctx(plan, args.dry_run, scratch, child_env(), doc["steps"], command)
    t0 = time.monotonic()
    for name in STEPS:
        if only and name not in only:
            doc["steps"][name] = previous.get(name) or {"status": "not run", "detail": "--only"}
            continue
        cap = min(STEP_CAPS[name], args.budget_s - (time.monotonic() - t0))
        print(f"[gpu_check] {name} (cap {cap:.0f} s) ...", flush=True)
        try:
            doc["steps"][name] = res = run_step(ctx, name, cap)
        except BaseException:  # SIGTERM / Ctrl-C: the child is killed; keep what we have
            doc["steps"][name] = {"status": "interrupted", "detail": "gpu_check was stopped"}
            doc["wall_s"] = time.monotonic() - t0
            write_results(doc, args.out)
            raise
        print(
            f"[gpu_check] {name}: {res['status']} in {res['seconds']:.0f} s "
            f"{_md_cell(res.get('detail', ''))[:200]}",
            flush=True,
        )
        doc["wall_s"] = time.monotonic() - t0
        write_results(doc, args.out)
    write_results(doc, args.out)  # with --only: the kept results of the steps after the last
    return doc


def _only(steps: list[str] | None) -> set[str]:
    """Steps ``--only`` runs: the named ones, environment, and demo_pool for the teacher."""
    if not steps:
        return set()
    return {*steps, "environment", *(["demo_pool"] if "teacher" in steps else [])}


def _previous_steps(args: argparse.Namespace) -> dict[str, Any]:
    """With ``--only``: the other steps' results from the existing result file, marked so."""
    path = args.out / f"gpu_check_{'cpu' if args.dry_run else 'gpu'}.json"
    if not args.only or not path.is_file():
        return {}
    prev = json.loads(path.read_text())
    steps = prev.get("steps", {})
    return {n: {**s, "from_run": s.get("from_run") or prev.get("date")} for n, s in steps.items()}


def _on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny sizes; writes gpu_check_cpu.{json,md}"
    )
    ap.add_argument("--out", type=Path, default=BENCH / "results", help="result folder")
    ap.add_argument("--budget-s", type=float, default=480.0, help="all steps together")
    ap.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="work folder (logs, demo project, runs); default: a new temp dir",
    )
    ap.add_argument(
        "--only",
        nargs="+",
        choices=list(STEPS),
        default=None,
        help="run these steps (and environment); keep the others' previous results",
    )
    ap.add_argument("--worker", nargs=2, metavar=("NAME", "JOB"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker[0]](json.loads(args.worker[1])), default=str))
        return 0
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    doc = run_all(args, command)
    stem = args.out / f"gpu_check_{'cpu' if args.dry_run else 'gpu'}"
    print(f"[gpu_check] wrote {stem}.json / .md in {doc['wall_s']:.0f} s")
    for g in doc["goals"]:
        print(f"[gpu_check] {g['verdict']:>4}  {g['goal']}: {g['measured']}")
    return 0 if all(s["status"] in ("ok", "not run") for s in doc["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
