"""Training-step benchmark: packed vs naive multi-crop student forward (``train_step``).

One measured step is exactly :func:`ssl_core.train.step.train_step`: student multi-crop forward +
backward, teacher (EMA) forward, Sinkhorn-Knopp targets, DINO + iBOT + KoLeo losses, AdamW step,
gradient clipping and the EMA update. The multi-crop augmentation is *not* timed: the crops of
each input batch are computed once before timing (with the real ``MultiCropAugmentation``) and
replayed, so the numbers are the model's cost and the augmentation's CPU time does not dilute the
packed/naive ratio.

Both paths start from the same initial weights (``build_teacher_model`` seeds the init), see the
same images, crops and iBOT masks at every step, and run with drop-path 0, so their first-step
losses must agree to float rounding; the benchmark asserts it (fp32: relative 1e-4; bf16
autocast: relative 2e-2). Throughput: ``warmup`` untimed steps per path, then ``repeats`` rounds
of ``steps`` timed steps per path, alternating packed / naive (and which goes first) so that
machine-load drift hits both; reported: median img/s per path and the median of the per-round
packed/naive ratios. Peak memory: one fresh subprocess per (preset, path) — ``ru_maxrss`` on CPU
(peak and increase over the RSS after building the model), ``torch.cuda.max_memory_allocated``
on CUDA.

Presets (``--presets``): ``tiny`` (32 px globals, 16 px locals, patch 4, 8 locals, 1024
prototypes), ``tiny_l2`` (the same with the 2 locals of ``params.yaml``), ``small`` (ViT-S/14,
2 x 224 + 8 x 98, DINOv2 head: 65536 prototypes, 2048 hidden, 256 bottleneck) and ``base``
(ViT-B/14, same crops and head). 4 register tokens everywhere (project default). ``--small-size
112`` runs small/base at 112/56 px (for slow CPUs). The step runs under bf16 autocast where
``train.precision: auto`` picks it (CUDA, CPUs with bf16 matrix units), as ``train_step`` does.

Model FLOPs (MFU numerator; same for both paths, so packed's masked-out attention is not
counted). A ViT forward over one image of n tokens (CLS + R registers + N patches), width D,
depth L, FFN hidden H, patch P, C channels:

    F_vit(n) = 2 N C P^2 D                      # patch embedding
             + L * (8 n D^2                     # qkv (6 n D^2) + output proj (2 n D^2)
                    + 4 n D H                   # MLP fc1 + fc2 (SwiGLU: 6 n D H)
                    + 4 n^2 D)                  # QK^T and AV

and a head forward costs F_head = sum over its Linear layers of 2 * in * out per token. Per step
with B images, n_g = 2 globals of n_G tokens, n_l locals of n_L tokens and M masked patches:

    F_step = 3 * [B (n_g F_vit(n_G) + n_l F_vit(n_L)) + ((n_g + n_l) B + M) F_head]   # student
           +     [B n_g F_vit(n_G) + (n_g B + M) F_head]                               # teacher

(forward + backward = 3 x forward). Layer norms, softmax, losses, Sinkhorn, the optimiser and the
EMA are not counted (< 1 %). MFU = F_step / step time / bf16 dense peak of the device
(``BF16_PEAK_TFLOPS``).

Attention FLOPs per path (``attn_flops_{naive,dense,flex}``, from ``flops.attention_flops``): the
``q k^T`` and ``attn v`` matmuls of one step, 4 m n D per (m x n) score block, with the
student's crops laid out as ``pack`` builds them: G = gcd(n_g B, n_l B) rows, each row the
n_g B / G globals then the n_l B / G locals of n_G and n_L tokens (CLS + registers + patches).
Per path, over the student's row:

    naive  sum over crops 4 n^2 D          (one forward per resolution)
    dense  4 S^2 D, S = row tokens         (SDPA with an S x S boolean mask: no tile skipped)
    flex   4 D x area of the 128 x 128 tiles holding a same-crop pair (BlockMask; CUDA only)

    A_step(path) = 3 * L * G * A_row(path) + L * n_g B * 4 n_G^2 D    # student fwd+bwd, teacher fwd

(the teacher's forward runs on the globals alone, naive on every path). ``packed=True`` -- what
``train_step`` gets here -- is ``"flex"`` on CUDA and ``"dense"`` elsewhere
(``resolve_packed_attention``; recorded as ``packed_attention``): on CPU the measured packed
img/s is the dense path's, and flex is FLOPs only.

Usage::

    .venv/bin/python benchmarks/train_step.py                       # CPU: tiny, tiny_l2, small
    .venv/bin/python benchmarks/train_step.py --presets tiny --steps 2 --repeats 3
    python benchmarks/train_step.py --device cuda --presets small base   # on a GPU machine
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before torch is imported: idle OpenMP threads must not spin
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import datetime as dt
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssl_core.config import TrainConfig  # noqa: E402
from ssl_core.data.augment import MultiCropAugmentation, MultiCropConfig  # noqa: E402
from ssl_core.models.packing import FLEX_BLOCK_SIZE, resolve_packed_attention  # noqa: E402
from ssl_core.models.param_groups import param_groups  # noqa: E402
from ssl_core.train.flops import (  # noqa: E402
    attention_flops,
    device_peak_tflops,
    head_flops_per_token,
    vit_forward_flops,
)
from ssl_core.train.precision import resolve_precision  # noqa: E402
from ssl_core.train.ssl_model import SSLModel  # noqa: E402
from ssl_core.train.step import Losses, train_step  # noqa: E402
from ssl_core.train.teacher import build_teacher_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step_report import _auto_conclusion, _auto_notes, machine_info, write_markdown  # noqa: E402

# Preset: backbone, global px, locals, head; default batch / timed steps / rounds / warm-up steps
# per device type (CPU: sized so that the default run takes ~5 min on 2 cores).
_TINY_HEAD = dict(out_dim=1024, head_hidden_dim=512, head_bottleneck_dim=128)
_DINOV2_HEAD = dict(out_dim=65536, head_hidden_dim=2048, head_bottleneck_dim=256)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(preset="tiny", image_size=32, n_local=8, **_TINY_HEAD,
                 cpu=dict(batch=16, steps=2, repeats=8, warmup=2),
                 cuda=dict(batch=256, steps=10, repeats=5, warmup=5)),
    "tiny_l2": dict(preset="tiny", image_size=32, n_local=2, **_TINY_HEAD,  # params.yaml
                    cpu=dict(batch=32, steps=2, repeats=8, warmup=2),
                    cuda=dict(batch=256, steps=10, repeats=5, warmup=5)),
    "small": dict(preset="small", image_size=224, n_local=8, **_DINOV2_HEAD,
                  cpu=dict(batch=2, steps=1, repeats=3, warmup=2),
                  cuda=dict(batch=64, steps=10, repeats=5, warmup=5)),
    "base": dict(preset="base", image_size=224, n_local=8, **_DINOV2_HEAD,
                 cpu=dict(batch=1, steps=1, repeats=3, warmup=2),
                 cuda=dict(batch=64, steps=10, repeats=5, warmup=5)),
}  # fmt: skip

# Fixed schedule values (post-warm-up, prototypes trainable): the step's cost does not depend on
# them, and fixed values keep both paths' optimisation identical.
SCHED = {"lr": 5e-4, "wd": 0.04, "momentum": 0.992, "teacher_temp": 0.04,
         "last_layer_lr_mult": 1.0}  # fmt: skip

RESULT_KEYS = (
    "preset", "device", "batch", "global_px", "local_px", "n_local", "tokens_global",
    "tokens_local", "packed_row_tokens", "loss_packed", "loss_naive", "loss_rel_diff",
    "img_s_packed", "img_s_naive", "ratio_packed_over_naive", "img_s_packed_reps",
    "img_s_naive_reps", "ratios", "flops_per_step", "tflops_packed", "tflops_naive",
    "mfu_packed", "mfu_naive", "peak_tflops", "steps", "warmup", "repeats", "packed_attention",
    "attn_flops_naive", "attn_flops_dense", "attn_flops_flex", "attn_dense_over_naive",
    "attn_flex_over_naive", "flex_block_size",
)  # fmt: skip
ATTN_PATHS = ("naive", "dense", "flex")


# ----------------------------------------------------------------------------- setup
class _ReplayAugment:
    """Stands in for ``MultiCropAugmentation`` inside ``train_step``: returns crops computed once
    per input batch (keyed by ``data_ptr``), and draws one number from the generator exactly as
    the real augmentation does, so the mask randomness that follows is unchanged."""

    def __init__(self, augment: MultiCropAugmentation, batches: list[torch.Tensor]) -> None:
        self.patch_size = augment.patch_size
        self._crops = {
            b.data_ptr(): augment(b, seed=1000 + i) for i, b in enumerate(batches)
        }  # fmt: skip

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> dict[str, list]:
        torch.randint(0, 2**62, (), generator=generator)
        return self._crops[images.data_ptr()]


@dataclasses.dataclass
class Setup:
    """Everything one path needs to run training steps."""

    model: SSLModel
    optimizer: torch.optim.Optimizer
    losses: Losses
    augment: _ReplayAugment
    cfg: TrainConfig
    images: list[torch.Tensor]
    device: torch.device
    packed: bool
    seed: int
    step: int = 0


def resolve_spec(name: str, size: int | None = None) -> dict[str, Any]:
    """Preset spec with ``image_size`` replaced by ``size`` for the ViT-S/B presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    spec = dict(PRESETS[name], name=name)
    if size is not None and spec["preset"] in ("small", "base"):
        spec["image_size"] = size
    return spec


def build_setup(
    spec: dict[str, Any], batch: int, device: torch.device, packed: bool, seed: int = 0
) -> Setup:
    """Model, optimiser, losses, two fixed input batches and their crops for one path."""
    cfg = TrainConfig(
        preset=spec["preset"],
        image_size=spec["image_size"],
        batch_size=batch,
        n_local_crops=spec["n_local"],
        out_dim=spec["out_dim"],
        head_hidden_dim=spec["head_hidden_dim"],
        head_bottleneck_dim=spec["head_bottleneck_dim"],
        num_register_tokens=4,
        drop_path_rate=0.0,
        layerscale_init=0.1,  # params.yaml; a larger layer-scale makes the loss check sharper
        seed=seed,
    )
    model = build_teacher_model(cfg).to(device).train()
    optimizer = torch.optim.AdamW(
        param_groups(
            model.student, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.patch_embed_lr_mult
        ),
        lr=cfg.lr,
        betas=(0.9, 0.999),
    )
    losses = Losses(cfg.out_dim, cfg.student_temp, cfg.centering).to(device)
    patch = model.student.backbone.patch_size
    mc = MultiCropConfig.scaled_for(cfg.image_size, patch, n_local=cfg.n_local_crops)
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    images = [torch.rand(batch, 3, s, s, generator=g).to(device) for _ in range(2)]
    augment = _ReplayAugment(MultiCropAugmentation(mc, patch), images)
    return Setup(model, optimizer, losses, augment, cfg, images, device, packed, seed)


def run_step(s: Setup) -> tuple[dict[str, float], float]:
    """One ``train_step`` on this path's next batch; returns (metrics, seconds)."""
    i = s.step
    g = torch.Generator().manual_seed(s.seed * 1_000_003 + i)
    torch.manual_seed(s.seed * 1_000_003 + i)
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
    t0 = time.perf_counter()
    m = train_step(
        s.model, s.model.student, s.optimizer, s.losses, s.images[i % 2], s.augment, g,
        SCHED, s.cfg, s.packed,
    )  # fmt: skip
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
    s.step += 1
    return m, time.perf_counter() - t0


# ----------------------------------------------------------------------------- flops
def step_flops(s: Setup, n_masked: float) -> float:
    """Model FLOPs of one training step (module docstring), ``n_masked`` masked patches."""
    vit = s.model.student.backbone
    b, p = s.cfg.batch_size, vit.patch_size
    mc = s.augment  # crop sizes from the replayed crops
    crops = next(iter(mc._crops.values()))
    n_g, n_l = len(crops["global"]), len(crops["local"])
    r = vit.num_register_tokens
    pg = (crops["global"][0].shape[-1] // p) ** 2
    f_g = vit_forward_flops(vit, 1 + r + pg, pg)
    f_l = 0.0
    if n_l:
        pl = (crops["local"][0].shape[-1] // p) ** 2
        f_l = vit_forward_flops(vit, 1 + r + pl, pl)
    fh = head_flops_per_token(s.model.student.dino_head)
    fh_ibot = (
        head_flops_per_token(s.model.student.ibot_head)
        if s.model.student.ibot_head is not None
        else fh
    )
    student = b * (n_g * f_g + n_l * f_l) + (n_g + n_l) * b * fh + n_masked * fh_ibot
    teacher = b * n_g * f_g + n_g * b * fh + n_masked * fh_ibot
    return 3.0 * student + teacher


def crop_tokens(s: Setup) -> dict[str, int]:
    """Crop sizes (px), counts and tokens per crop (CLS + registers + patches) of a setup."""
    vit = s.model.student.backbone
    crops = next(iter(s.augment._crops.values()))
    gpx = crops["global"][0].shape[-1]
    lpx = crops["local"][0].shape[-1] if crops["local"] else 0
    extra, p = 1 + vit.num_register_tokens, vit.patch_size
    return {
        "global_px": gpx,
        "local_px": lpx,
        "n_global": len(crops["global"]),
        "n_local": len(crops["local"]),
        "tokens_global": extra + (gpx // p) ** 2,
        "tokens_local": extra + (lpx // p) ** 2 if lpx else 0,
    }


def packed_rows(batch: int, ct: dict[str, int]) -> tuple[int, list[int]]:
    """(rows G, segment lengths of one row) of the student's packed forward, as ``pack`` lays
    it out: G = gcd(n_g B, n_l B); a row holds n_g B / G globals, then n_l B / G locals."""
    n_g, n_l = ct["n_global"] * batch, ct["n_local"] * batch
    g = math.gcd(n_g, n_l)  # gcd(x, 0) = x: no locals
    return g, [ct["tokens_global"]] * (n_g // g) + [ct["tokens_local"]] * (n_l // g)


def step_attention_flops(s: Setup, ct: dict[str, int]) -> dict[str, float]:
    """Attention-matmul FLOPs of one step per student path (module docstring: ``A_step``)."""
    c = s.model.student.backbone.config
    rows, lengths = packed_rows(s.cfg.batch_size, ct)
    n_teacher = ct["n_global"] * s.cfg.batch_size
    teacher = c.depth * n_teacher * attention_flops([ct["tokens_global"]], c.embed_dim)
    return {
        path: 3.0 * c.depth * rows * attention_flops(lengths, c.embed_dim, path, FLEX_BLOCK_SIZE)
        + teacher
        for path in ATTN_PATHS
    }


def attention_columns(s: Setup, ct: dict[str, int]) -> dict[str, Any]:
    """Result fields: which attention ``packed`` ran here, per-path attention FLOPs and ratios."""
    a = step_attention_flops(s, ct)
    return {
        "packed_attention": resolve_packed_attention(s.packed, s.device) or "naive",
        "flex_block_size": FLEX_BLOCK_SIZE,
        **{f"attn_flops_{k}": v for k, v in a.items()},
        "attn_dense_over_naive": a["dense"] / a["naive"],
        "attn_flex_over_naive": a["flex"] / a["naive"],
    }


# ----------------------------------------------------------------------------- core
def benchmark_preset(
    name: str,
    device: str | torch.device = "cpu",
    batch: int | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    size: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Throughput of packed vs naive ``train_step`` on one preset; asserts equal first-step loss.

    Args:
        name: Key of :data:`PRESETS`.
        device: ``cpu`` or ``cuda``.
        batch: Images per step; None: the preset's default for this device type (as for
            ``steps``, ``warmup``, ``repeats``).
        steps: Timed steps per path per round.
        warmup: Untimed steps per path first (>= 1; the first one is the loss check).
        repeats: Rounds, alternating packed / naive.
        size: Global crop px for small/base (locals scaled as DINOv2: 224 -> 98).
        seed: Init, image and mask seed (same for both paths).

    Returns:
        Dict with :data:`RESULT_KEYS` (img/s medians, per-round values, ratio, FLOPs, MFU).
    """
    dev = torch.device(device)
    spec = resolve_spec(name, size)
    dflt = spec[dev.type]
    batch = batch or dflt["batch"]
    steps = steps or dflt["steps"]
    repeats = repeats or dflt["repeats"]
    warmup = max(1, dflt["warmup"] if warmup is None else warmup)
    paths = {
        "packed": build_setup(spec, batch, dev, packed=True, seed=seed),
        "naive": build_setup(spec, batch, dev, packed=False, seed=seed),
    }
    first = {k: run_step(s)[0] for k, s in paths.items()}
    lp, ln = first["packed"]["loss"], first["naive"]["loss"]
    rel = abs(lp - ln) / max(abs(ln), 1e-12)
    bf16 = resolve_precision(paths["packed"].cfg.precision, dev) == "bf16"
    tol = 2e-2 if bf16 else 1e-4
    assert rel <= tol, f"{name}: packed loss {lp} != naive loss {ln} (rel {rel:.2e} > {tol})"
    for _ in range(warmup - 1):
        for s in paths.values():
            run_step(s)
    reps: dict[str, list[float]] = {"packed": [], "naive": []}
    secs: dict[str, float] = {"packed": 0.0, "naive": 0.0}
    masked: list[int] = []
    for r in range(repeats):
        order = ("packed", "naive") if r % 2 == 0 else ("naive", "packed")
        for k in order:
            t = 0.0
            for _ in range(steps):
                m, dt_ = run_step(paths[k])
                t += dt_
                if k == "packed":
                    masked.append(m["n_masked"])
            reps[k].append(batch * steps / t)
            secs[k] += t
    ratios = [p / n for p, n in zip(reps["packed"], reps["naive"], strict=True)]
    s0 = paths["packed"]
    ct = crop_tokens(s0)
    flops = step_flops(s0, statistics.fmean(masked) if masked else 0.0)
    n_steps = steps * repeats
    tf = {k: flops * n_steps / secs[k] / 1e12 if secs[k] > 0 else float("nan") for k in secs}
    peak = device_peak_tflops(dev)
    return {
        "preset": name,
        "backbone": spec["preset"],
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": "bf16 autocast" if bf16 else "fp32",
        "batch": batch,
        "global_px": ct["global_px"],
        "local_px": ct["local_px"],
        "n_local": spec["n_local"],
        "tokens_global": ct["tokens_global"],
        "tokens_local": ct["tokens_local"],
        "packed_row_tokens": sum(packed_rows(batch, ct)[1]),
        "loss_packed": lp,
        "loss_naive": ln,
        "loss_rel_diff": rel,
        "grad_norm_packed": first["packed"]["grad_norm"],
        "grad_norm_naive": first["naive"]["grad_norm"],
        "grad_norm_rel_diff": abs(first["packed"]["grad_norm"] - first["naive"]["grad_norm"])
        / max(abs(first["naive"]["grad_norm"]), 1e-12),
        "img_s_packed": statistics.median(reps["packed"]),
        "img_s_naive": statistics.median(reps["naive"]),
        "ratio_packed_over_naive": statistics.median(ratios),
        "img_s_packed_reps": reps["packed"],
        "img_s_naive_reps": reps["naive"],
        "ratios": ratios,
        "flops_per_step": flops,
        "tflops_packed": tf["packed"],
        "tflops_naive": tf["naive"],
        "mfu_packed": tf["packed"] / peak if peak else None,
        "mfu_naive": tf["naive"] / peak if peak else None,
        "peak_tflops": peak,
        "steps": steps,
        "warmup": warmup,
        "repeats": repeats,
        **attention_columns(s0, ct),
    }


# ----------------------------------------------------------------------------- memory
def _status_mb(key: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from /proc/self/status, MB (None off Linux)."""
    try:
        for ln in Path("/proc/self/status").read_text().splitlines():
            if ln.startswith(key + ":"):
                return int(ln.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0: ``5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_worker(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: build one path, run ``steps`` steps, report its peak memory.

    CPU: ``ru_maxrss`` of a child started by fork + exec also carries the parent's RSS at fork
    time (Linux keeps the larger of the two across exec), and the parent holds two models; so
    the peak is read from ``VmHWM`` (high-water mark of this process's own address space), and
    the step peak from ``VmHWM`` after resetting it once the model, optimiser and crops are
    built. ``ru_maxrss`` is recorded too, for reference.
    """
    dev = torch.device(job["device"])
    spec = resolve_spec(job["preset"], job.get("size"))
    s = build_setup(spec, job["batch"], dev, packed=job["packed"], seed=job.get("seed", 0))
    rss_build, hwm_build = _status_mb("VmRSS"), _status_mb("VmHWM")
    reset = _reset_peak_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev) / 2**20
    for _ in range(job["steps"]):
        run_step(s)
    hwm = _status_mb("VmHWM")
    out: dict[str, Any] = {
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_after_build_mb": rss_build,
    }
    if hwm is not None and rss_build is not None and hwm_build is not None:
        out["rss_peak_mb"] = max(hwm, hwm_build)
        out["rss_step_peak_mb"] = hwm if reset else None
        out["rss_increase_mb"] = hwm - rss_build if reset else None
    else:  # not Linux: ru_maxrss only
        out["rss_peak_mb"] = out["ru_maxrss_mb"]
        out["rss_step_peak_mb"] = out["rss_increase_mb"] = None
    if dev.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        out["cuda_after_build_mb"] = base_cuda
    return out


def measure_memory(
    name: str, device: str, batch: int, packed: bool, size: int | None, steps: int = 2
) -> dict[str, Any]:
    """Run :func:`memory_worker` in a subprocess (so ``ru_maxrss`` is this path's alone)."""
    job = dict(preset=name, device=device, batch=batch, packed=packed, size=size, steps=steps)
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    res = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", nargs="+", default=None, help=f"of {list(PRESETS)}")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per path per round")
    ap.add_argument("--batch", type=int, default=None, help="images per step (all presets)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per path")
    ap.add_argument("--repeats", type=int, default=None, help="packed/naive rounds")
    ap.add_argument("--small-size", type=int, default=None, help="global px for small/base")
    ap.add_argument("--memory-steps", type=int, default=2, help="0: skip the memory runs")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(memory_worker(json.loads(args.worker))))
        return
    if args.device == "cpu" and hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    dev_type = torch.device(args.device).type
    presets = args.presets or (["tiny", "small", "base"] if dev_type == "cuda"
                               else ["tiny", "tiny_l2", "small"])  # fmt: skip
    t0 = time.perf_counter()
    doc: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "benchmarks/train_step.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": args.device,
        "machine": machine_info(),
        "loadavg_start": list(os.getloadavg()),
        "size": args.small_size,
        "memory_steps": args.memory_steps,
        "results": [],
    }
    for name in presets:
        tp = time.perf_counter()
        r = benchmark_preset(
            name, args.device, args.batch, args.steps, args.warmup, args.repeats, args.small_size
        )
        r["throughput_wall_s"] = time.perf_counter() - tp
        if args.memory_steps > 0:
            r["memory"] = {
                k: measure_memory(
                    name,
                    args.device,
                    r["batch"],
                    k == "packed",
                    args.small_size,
                    args.memory_steps,
                )  # fmt: skip
                for k in ("packed", "naive")
            }
        print(
            f"{name}: packed {r['img_s_packed']:.2f} img/s, naive {r['img_s_naive']:.2f} img/s, "
            f"ratio {r['ratio_packed_over_naive']:.2f} {', '.join(f'{x:.2f}' for x in r['ratios'])}, "
            f"loss {r['loss_packed']:.6f} / {r['loss_naive']:.6f}, "
            f"mem {json.dumps(r.get('memory'))}, {time.perf_counter() - tp:.0f} s",
            flush=True,
        )
        doc["results"].append(r)
    doc["loadavg_end"] = list(os.getloadavg())
    doc["wall_s"] = time.perf_counter() - t0
    doc["notes"] = _auto_notes(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"train_step_{dev_type}"
    doc["conclusion"] = _auto_conclusion(doc)
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    write_markdown(doc, args.out / f"{stem}.md")
    print(f"wrote {args.out / stem}.json/.md in {doc['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
