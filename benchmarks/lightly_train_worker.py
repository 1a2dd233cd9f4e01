"""The lightly-train process of the training-throughput benchmark (issue #20): run inside the
throwaway venv that ``benchmarks/lightly_train_peer.py`` builds, as
``<venv python> benchmarks/lightly_train_worker.py <json spec>``; prints one JSON line.

It imports only the stdlib, torch and lightly_train (never ``ssl_core``) and calls::

    lightly_train.pretrain(
        out=<work_dir>/out, data=<images_dir>, overwrite=True,
        model="dinov2/vits14-notpretrained",      # ViT-S/14, 4 registers, random init
        model_args={"img_size": 56},              # position embeddings sized for the global crop
        method="dinov2",
        method_args={"output_dim": 65536},        # DINO (and shared iBOT) head prototypes
        transform_args={"image_size": (56, 56),
                        "local_view": {"num_views": 4, "view_size": (28, 28)}},
        batch_size=64, num_workers=<json, default 0>, epochs=ceil(steps / (N // 64)),
        accelerator="cpu", devices=1, precision=<json, default "32-true">,
        float32_matmul_precision="highest",
        seed=0,
        loggers={"jsonl": None, "tensorboard": None},
        callbacks={"learning_rate_monitor": None, "model_checkpoint": None,
                   "model_export": None},
        trainer_args={"max_steps": steps, "enable_checkpointing": False},
    )

``"dinov2/vits14-notpretrained"`` has an empty weights URL, so nothing is downloaded; in
addition the worker sets ``LIGHTLY_TRAIN_EVENTS_DISABLED=1`` (no telemetry),
``HF_HUB_OFFLINE=1`` and points ``LIGHTLY_TRAIN_CACHE_DIR`` into the work dir.

What lightly-train does that differs from the requested settings or from a bare DINO loop
(reported, not changed):

- The "dinov2" method is DINO + iBOT + KoLeo: the student's global crops are masked
  (``mask_probability=0.5``, ratio 0.1-0.5) and an iBOT loss runs on the masked patch tokens
  through the *shared* head (``ibot_separate_head=False``): 3-layer MLP 384-2048-2048-256,
  then the 65,536-prototype weight-normed layer (22.4 M parameters, as large as the backbone).
  Teacher: global crops only, EMA after every step. Optimiser: AdamW, lr 0.004 x sqrt(64/1024),
  layer-wise decay 0.9, gradient clipping 3.0, last layer frozen for the first 1,250 steps
  (its gradient is still computed).
- ViT-S/14 from the DINOv2 train config: ``drop_path_rate=0.1``, layerscale 1e-5, 4 registers.
- Augmentations are lightly's DINOv2 defaults (colour jitter, grey-scale, blur, solarize),
  global crop scale (0.32, 1.0), local (0.05, 0.32). 28x28 grey PNGs are read as RGB
  (``num_channels`` resolves to 3 from the 3-channel normalisation).
- Step 0 also renders an augmentation preview with matplotlib (``Method._log_example_views``).
- The DataLoader is lightly's own: ``shuffle=True, drop_last=True``, workers not persistent, so
  with ``num_workers > 0`` the workers restart at every epoch boundary.
- Non-training overhead switched off: the tensorboard and jsonl loggers, the LR monitor, the
  model checkpoint and model export callbacks, and Lightning's default checkpoint. Kept: the
  progress bar (stderr) and the NaN early-stopping check. After ``fit`` lightly still exports
  the backbone once (outside the timed steps).

Timing: the worker wraps ``DINOv2.on_train_batch_start`` / ``on_train_batch_end`` (the end hook
runs after the optimizer step *and* the teacher EMA update) and records wall-clock
``time.time()`` per step. Steady-state images/s = ``batch_size * k / (end[-1] - end[-1-k])``
over the last ``k = steps - warmup`` steps, so data loading between steps is included
(see ``lightly_train_peer.steady_images_per_s``). ``t_process_start`` is ``run_lightly``'s
``time.time()`` just before ``Popen`` (the kernel's start time from ``/proc/self/stat`` is kept
as ``t_process_start_kernel``; it is only ~1 s exact). ``t_first_step_start - t_process_start``
is the startup: interpreter, imports, dataset indexing, model build, first batch loaded.
``peak_rss_mb`` is the worker's ``VmHWM``. With ``num_workers > 0``, ``children_peak_rss_mb``
is ``ru_maxrss`` of the largest reaped DataLoader worker (a per-child maximum, not a sum, and
it counts pages shared copy-on-write with the parent); with ``num_workers=0`` it is ``None``
(the only children are lightly's ``git rev-parse`` / ``git status`` calls for its system-info
log, run in the work dir, whose ``ru_maxrss`` would echo the parent's RSS at fork time).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

MODEL_NAME = "dinov2/vits14-notpretrained"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def _process_start_time() -> float:
    """Wall-clock start of this process from the kernel (ticks since boot + ``btime``, ~1 s)."""
    stat = Path("/proc/self/stat").read_text()
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    btime = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    return btime + start_ticks / os.sysconf("SC_CLK_TCK")


def vm_hwm_mb() -> float:
    """This process's peak resident set (``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _count_images(images_dir: Path) -> int:
    return sum(1 for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def pretrain_kwargs(spec: dict[str, Any], n_images: int) -> dict[str, Any]:
    """The exact ``lightly_train.pretrain`` keyword arguments for ``spec`` (JSON-serialisable)."""
    bs, steps = int(spec["batch_size"]), int(spec["steps"])
    steps_per_epoch = n_images // bs
    if steps_per_epoch < 1:
        raise ValueError(f"{spec['images_dir']}: {n_images} images < batch size {bs}")
    g, loc = int(spec["global_crop_size"]), int(spec["local_crop_size"])
    transform_args = {
        "image_size": [g, g],
        "local_view": {"num_views": int(spec["n_local_crops"]), "view_size": [loc, loc]},
    }
    _merge(transform_args, spec.get("transform_args") or {})
    return {
        "out": str(Path(spec["work_dir"]) / "out"),
        "data": spec["images_dir"],
        "overwrite": True,
        "model": MODEL_NAME,
        "model_args": {"img_size": g, **(spec.get("model_args") or {})},
        "method": "dinov2",
        "method_args": {"output_dim": int(spec["output_dim"]), **(spec.get("method_args") or {})},
        "transform_args": transform_args,
        "batch_size": bs,
        "num_workers": int(spec["num_workers"]),
        "epochs": math.ceil(steps / steps_per_epoch),
        "accelerator": "cpu",
        "devices": 1,
        "precision": spec.get("precision", "32-true"),
        "float32_matmul_precision": "highest",
        "seed": int(spec["seed"]),
        "loggers": {"jsonl": None, "tensorboard": None},
        "callbacks": {
            "learning_rate_monitor": None,
            "model_checkpoint": None,
            "model_export": None,
        },
        "trainer_args": {"max_steps": steps, "enable_checkpointing": False},
    }


def _merge(base: dict[str, Any], override: dict[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _install_step_timer(method_cls: type) -> dict[str, list[float]]:
    """Record wall time at the start and end (after optimizer step + EMA) of every step."""
    times: dict[str, list[float]] = {"start": [], "end": []}
    orig_start, orig_end = method_cls.on_train_batch_start, method_cls.on_train_batch_end

    def on_train_batch_start(self: Any, *args: Any, **kwargs: Any) -> Any:
        times["start"].append(time.time())
        return orig_start(self, *args, **kwargs)

    def on_train_batch_end(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = orig_end(self, *args, **kwargs)
        times["end"].append(time.time())
        return out

    method_cls.on_train_batch_start = on_train_batch_start
    method_cls.on_train_batch_end = on_train_batch_end
    return times


def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Run lightly_train.pretrain for ``spec`` in this process; return the timing record."""
    t_kernel_start = _process_start_time()
    t_main = time.time()
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(here)]
    cache = Path(spec["work_dir"]) / "lightly-cache"
    os.environ.setdefault("LIGHTLY_TRAIN_CACHE_DIR", str(cache))
    os.environ.setdefault("LIGHTLY_TRAIN_EVENTS_DISABLED", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import lightly_train
    import pytorch_lightning
    import torch
    import torchvision
    import torchvision.extension
    from lightly_train._methods.dinov2.dinov2 import DINOv2

    t_imported = time.time()
    times = _install_step_timer(DINOv2)
    n_images = _count_images(Path(spec["images_dir"]))
    kwargs = pretrain_kwargs(spec, n_images)
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the one JSON line
        lightly_train.pretrain(**kwargs)
    t_done = time.time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    if kwargs["num_workers"] == 0:  # only lightly's `git` calls, forked from this process
        children = None
    return {
        "step_start_times": times["start"],
        "step_end_times": times["end"],
        # the caller's clock just before Popen; the kernel's start time is coarser (btime is
        # whole seconds and drifts against the wall clock), kept for direct runs
        "t_process_start": spec.get("t_spawn", t_kernel_start),
        "t_process_start_kernel": t_kernel_start,
        "t_worker_main": t_main,
        "t_imported": t_imported,
        "t_first_step_start": times["start"][0] if times["start"] else None,
        "t_done": t_done,
        "batch_size": kwargs["batch_size"],
        "steps_requested": int(spec["steps"]),  # more than len(step_end_times) if stopped early
        "n_images": n_images,
        "peak_rss_mb": vm_hwm_mb(),
        "children_peak_rss_mb": children,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "lightly_train": lightly_train.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pytorch_lightning": pytorch_lightning.__version__,
            "python": sys.version.split()[0],
            "torchvision_cpp_ops": torchvision.extension._has_ops(),
        },
        "settings": kwargs,
    }


if __name__ == "__main__":
    print(json.dumps(worker_main(json.loads(sys.argv[1]))), flush=True)
