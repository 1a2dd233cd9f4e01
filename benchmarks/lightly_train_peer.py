"""lightly-train 0.18 as the peer in the training-throughput benchmark (issue #20).

lightly-train is never a project dependency: :func:`ensure_venv` builds a throwaway virtualenv
(default ``<tmp>/sslops-bench/lightly-train-0.18.0``, outside the repo) holding

- ``torch==2.13.0+cpu`` (the project's own CPU wheel, installed in the same pip call so that pip
  never pulls the multi-GB CUDA build of ``torch`` from PyPI),
- ``torchvision==0.28.0`` (the PyPI wheel for torch 2.13.0, reports ``0.28.0+cu130``). Its C++
  ops link ``libtorch_cuda.so`` and cannot load next to the ``+cpu`` torch, and two unguarded
  ``register_fake`` calls then break ``import torchvision``; :func:`ensure_venv` patches those
  two lines in the throwaway venv (see :func:`_patch_torchvision_meta`). torchvision's C++ ops
  (nms, roi_align, image decoding) stay unavailable: DINOv2 pretraining uses none of them and
  lightly-train falls back to PIL for reading images. (No CPU torchvision wheel is reachable
  here; torch 2.14.1 + torchvision 0.29.1 from PyPI would pull ~2.2 GB of CUDA wheels and a
  different torch than the project's.)
- ``lightly-train==0.18.0`` and its dependencies (Lightning, transformers, albumentations, ...).

The install time and the versions are stored in ``<venv>/sslops-install.json``.

The lightly-train side of each run is ``benchmarks/lightly_train_worker.py``, started by
:func:`run_lightly` under the venv's python (settings, what lightly-train forces, timing: its
docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LIGHTLY_TRAIN_VERSION = "0.18.0"
TORCH_REQ = "torch==2.13.0+cpu"
TORCHVISION_REQ = "torchvision==0.28.0"
DEFAULT_VENV_DIR = (
    Path(tempfile.gettempdir()) / "sslops-bench" / f"lightly-train-{LIGHTLY_TRAIN_VERSION}"
)
WORKER = Path(__file__).resolve().with_name("lightly_train_worker.py")
DEFAULT_SPEC: dict[str, Any] = {
    "batch_size": 64,
    "global_crop_size": 56,
    "local_crop_size": 28,
    "n_local_crops": 4,
    "output_dim": 65536,
    "num_workers": 0,
    "seed": 0,
    # lightly-train's own choice on a CPU: its precision="auto" is bf16-mixed only with a CUDA
    # GPU that supports bf16, else 32-true (train_helpers.get_precision, 0.18)
    "precision": "32-true",
}
_INSTALL_RECORD = "sslops-install.json"
_TV_PATCH_MARK = "sslops-bench: guard for CPU torch"
_PROBE = (
    "import json, torch, torchvision, lightly_train, pytorch_lightning; "
    "print(json.dumps({'torch': torch.__version__, 'torchvision': torchvision.__version__, "
    "'lightly_train': lightly_train.__version__, 'pytorch_lightning': pytorch_lightning.__version__,"
    " 'cuda': torch.version.cuda}))"
)


# --------------------------------------------------------------------------- venv (caller side)


def probe_venv(python: Path) -> dict[str, Any] | None:
    """Versions seen by ``python`` if torch, torchvision and lightly_train import together."""
    if not python.exists():
        return None
    p = subprocess.run(
        [str(python), "-c", _PROBE], capture_output=True, text=True, check=False, timeout=300
    )
    if p.returncode != 0:
        print(f"[lightly-peer] venv probe failed:\n{p.stderr[-2000:]}", file=sys.stderr)
        return None
    versions = json.loads(p.stdout.strip().splitlines()[-1])
    wanted = versions["lightly_train"] == LIGHTLY_TRAIN_VERSION and versions["cuda"] is None
    return versions if wanted and versions["torch"] == TORCH_REQ.split("==")[1] else None


def ensure_venv(venv_dir: Path = DEFAULT_VENV_DIR) -> Path:
    """Create (or reuse, if it already works) the lightly-train venv; return its python.

    One pip call installs the CPU torch wheel, torchvision and lightly-train together, so pip
    cannot swap in the CUDA torch from PyPI. ``torch==2.13.0+cpu`` must be reachable through
    pip's configuration (here: ``find-links /opt/wheels``); elsewhere set
    ``PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu``.
    """
    venv_dir = Path(venv_dir)
    python = venv_dir / "bin" / "python"
    versions = probe_venv(python) or _repair(python)
    if versions is not None:
        print(f"[lightly-peer] reusing {venv_dir}: {versions}", file=sys.stderr)
        return python
    if venv_dir.exists():
        if not (venv_dir / "pyvenv.cfg").is_file():
            raise RuntimeError(
                f"{venv_dir} exists but is not a virtualenv; remove it or pass another venv_dir."
            )
        print(f"[lightly-peer] {venv_dir} is broken or outdated: rebuilding", file=sys.stderr)
        shutil.rmtree(venv_dir)
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _check_call([sys.executable, "-m", "venv", str(venv_dir)], "create the virtualenv")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    reqs = [TORCH_REQ, TORCHVISION_REQ, f"lightly-train=={LIGHTLY_TRAIN_VERSION}"]
    _check_call(
        pip + reqs,
        f"install {' '.join(reqs)} (is {TORCH_REQ} reachable? e.g. "
        "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)",
    )
    patched = _patch_torchvision_meta(python)
    install_s = time.time() - t0
    versions = probe_venv(python)
    if versions is None:
        raise RuntimeError(
            f"lightly-train venv at {venv_dir} installed but `import torch, torchvision, "
            "lightly_train` fails or shows other versions (see stderr above); delete it and retry."
        )
    record = {
        "install_s": round(install_s, 1),
        "requirements": reqs,
        "versions": versions,
        "torchvision_meta_patched": patched,
    }
    (venv_dir / _INSTALL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    print(f"[lightly-peer] installed in {install_s:.0f} s: {versions}", file=sys.stderr)
    return python


def _patch_torchvision_meta(python: Path) -> bool:
    """Let the PyPI torchvision import next to the CPU torch; True if the file was patched.

    PyPI's torchvision 0.28.0 ``_C.so`` links ``libtorch_cuda.so``, which torch 2.13.0+cpu does
    not ship, so the custom ops (nms, roi_align, ...) do not load. torchvision already skips
    its Meta kernels in that case, except the two ``register_fake`` calls for ``nms`` / ``qnms``
    in ``_meta_registrations.py``, which then raise "operator torchvision::nms does not exist"
    and break ``import torchvision``. The patch applies the same guard to those two. DINOv2
    pretraining uses none of these ops; image decoding falls back from torchvision.io (whose
    ``image.so`` is CUDA-linked too) to PIL inside lightly-train.
    """
    find = "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])"
    p = subprocess.run([str(python), "-c", find], capture_output=True, text=True, check=True)
    path = Path(p.stdout.strip()) / "_meta_registrations.py"
    src = path.read_text()
    if _TV_PATCH_MARK in src:
        return True
    anchor, decorator = (
        "import torchvision.extension  # noqa: F401\n",
        "@torch.library.register_fake(",
    )
    if src.count(anchor) != 1 or src.count(decorator) != 2:
        return False  # another torchvision layout: leave it, the import probe decides
    helper = (
        f"\n\ndef _register_fake_if_ops(name):  # {_TV_PATCH_MARK}\n"
        "    if torchvision.extension._has_ops():\n"
        "        return torch.library.register_fake(name)\n"
        "    return lambda fn: fn\n"
    )
    src = src.replace(anchor, anchor + helper).replace(decorator, "@_register_fake_if_ops(")
    path.write_text(src)
    return True


def _repair(python: Path) -> dict[str, Any] | None:
    """Patch an installed venv that lacks the torchvision patch (interrupted build); probe it."""
    if not python.exists():
        return None
    try:
        return probe_venv(python) if _patch_torchvision_meta(python) else None
    except (subprocess.CalledProcessError, OSError):
        return None


def _check_call(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"could not {what}: `{' '.join(cmd)}` failed\n{p.stderr[-3000:]}")


def install_record(python: Path) -> dict[str, Any] | None:
    """What :func:`ensure_venv` stored when it built the venv that holds ``python``."""
    path = Path(python).parent.parent / _INSTALL_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------- runner (caller side)


def run_lightly(
    python: Path,
    images_dir: Path,
    work_dir: Path,
    steps: int,
    num_workers: int = 0,
    timeout_s: float = 3600.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``steps`` lightly-train DINOv2 steps in a fresh process; return the worker's JSON.

    The caller's environment (``OMP_NUM_THREADS`` etc.) is passed through unchanged. ``extra``
    may override keys of :data:`DEFAULT_SPEC` or add ``model_args`` / ``method_args`` /
    ``transform_args`` dicts that are merged over the defaults. The worker's stderr goes to
    ``<work_dir>/lightly_worker.stderr.log``.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        **DEFAULT_SPEC,
        **(extra or {}),
        "images_dir": str(Path(images_dir).resolve()),
        "work_dir": str(work_dir.resolve()),
        "steps": int(steps),
        "num_workers": int(num_workers),
    }
    log_path = work_dir / "lightly_worker.stderr.log"
    spec["t_spawn"] = time.time()
    cmd = [str(python), str(WORKER), json.dumps(spec)]
    with open(log_path, "w") as log:
        # cwd: lightly logs `git status` of the working directory; keep it out of the repo
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=work_dir,
            start_new_session=True,
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(
                f"lightly-train worker ran past {timeout_s:.0f} s; raise timeout_s or lower "
                f"steps. stderr tail:\n{_tail(log_path)}"
            ) from e
        finally:
            if proc.poll() is None:  # timeout or Ctrl-C: end the worker and its loader workers
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"lightly-train worker exited with {proc.returncode} (log: {log_path}). "
            f"stderr tail:\n{_tail(log_path)}"
        )
    result = json.loads(lines[-1])
    result["install"] = install_record(python)
    return result


def _tail(path: Path, n_chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-n_chars:] if path.exists() else "(no log)"


def steady_images_per_s(result: dict[str, Any], warmup: int = 2) -> float:
    """Images/s over the steps after the first ``warmup`` (from end of step ``warmup - 1``)."""
    ends = result["step_end_times"]
    if len(ends) <= warmup or warmup < 1:
        raise ValueError(f"need more than warmup={warmup} >= 1 steps, got {len(ends)}")
    return result["batch_size"] * (len(ends) - warmup) / (ends[-1] - ends[warmup - 1])


# ------------------------------------------------------------------------------------- CLI


def _smoke(args: argparse.Namespace) -> None:
    python = ensure_venv(args.venv_dir)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="run-", dir=args.venv_dir.parent))
    r = run_lightly(python, args.images, work_dir, args.steps, num_workers=args.num_workers)
    print(json.dumps(r))
    steady = steady_images_per_s(r, warmup=args.warmup)
    startup = r["t_first_step_start"] - r["t_process_start"]
    child = r["children_peak_rss_mb"]
    child_txt = "no loader workers" if child is None else f"largest loader worker {child:.0f} MiB"
    print(
        f"lightly-train {r['versions']['lightly_train']} (torch {r['versions']['torch']}, "
        f"{r['torch_threads']} threads): steady {steady:.1f} img/s over steps "
        f"{args.warmup}..{len(r['step_end_times']) - 1}, startup {startup:.1f} s, "
        f"peak RSS {r['peak_rss_mb']:.0f} MiB ({child_txt})",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--images", type=Path, help="folder of images (smoke run)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of steady img/s")
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--venv-dir", type=Path, default=DEFAULT_VENV_DIR)
    ap.add_argument("--work-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.images is None:
        ap.error("pass --images DIR (smoke run)")
    _smoke(args)


if __name__ == "__main__":
    main()
