"""Atomic, pickle-free training checkpoints made of named parts (torchtitan-style).

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and
dicts, so it loads with ``torch.load(weights_only=True)`` (no arbitrary unpickling). Parts:

* ``model``: student + EMA (+ heads) state dict (a frozen distillation teacher is an input, not
  state, and is left out);
* ``losses``: loss buffers (softmax centres);
* ``optimizer``: AdamW state;
* ``train_state``: step, epoch, batch index inside the epoch (the dataloader position), counters;
* ``rng``: torch CPU (and CUDA) generator states; the data order and the per-step augmentation /
  mask generators are pure functions of (seed, epoch) and (seed, rank, step), so these plus the
  position restore the exact stream;
* ``config``: the JSON of the run's config, to refuse resuming a different run.

Writes go to a temporary sibling and are renamed into place (``os.replace``), so a kill during a
write leaves the previous checkpoint intact. Next to it, ``<name>.record.json`` holds its size
and sha256: written just before the rename listing both the new and the previous file (either
may be on disk if the process dies between the two renames), and again after it with the new
one only. :func:`verify_checkpoint` checks a checkpoint against it before a resume; a
checkpoint that does not match (truncated, altered, or without a record) is not resumed from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ssl_core.models.official import CheckpointError, safe_torch_load
from ssl_core.utils.atomic import atomic_path
from ssl_core.utils.hashing import Digest, file_digest, verify_record, write_record

__all__ = [
    "RESUME_PARTS",
    "RUNTIME_ONLY",
    "CheckpointError",
    "get_rng_state",
    "load_checkpoint",
    "recipe_changes",
    "restore_run",
    "save_checkpoint",
    "set_rng_state",
    "verify_checkpoint",
]

FORMAT_VERSION = 1
RESUME_PARTS = ("config", "model", "optimizer", "losses", "rng", "train_state")
"""Parts :func:`restore_run` needs."""

log = logging.getLogger("sslops.train")

# Settings that change how a run executes or reports, not what it computes: a checkpoint written
# with other values of these is still resumed (e.g. more threads, or a denser kNN curve).
RUNTIME_ONLY = ("num_threads", "num_workers", "log_every", "checkpoint_every", "knn_every")


def recipe_changes(saved_json: str, current_json: str) -> list[str]:
    """Names of the recipe fields that differ between a checkpoint and this run."""
    saved, current = json.loads(saved_json), json.loads(current_json)
    keys = (set(saved) | set(current)) - set(RUNTIME_ONLY)
    return sorted(k for k in keys if saved.get(k, "<missing>") != current.get(k, "<missing>"))


def _short(e: BaseException, n: int = 6) -> str:
    """The first ``n`` lines of an error (torch lists every mismatched key)."""
    lines = [ln.strip() for ln in str(e).strip().rstrip(".").splitlines() if ln.strip()]
    return "\n  ".join(lines[:n]) + ("\n  ..." if len(lines) > n else "")


def get_rng_state() -> dict[str, Any]:
    """Global torch RNG states (CPU, and every CUDA device when available)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state` (CUDA states ignored when CUDA is absent)."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, parts: dict[str, Any]) -> Path:
    """Atomically write ``parts`` (named sub-dicts) to ``path``.

    Args:
        path: Destination file (``checkpoint.pt``).
        parts: e.g. ``{"model": ..., "optimizer": ..., "train_state": ..., "rng": ...}``; values
            must be loadable with ``weights_only=True`` (tensors, containers, primitives).

    Returns:
        The written path.
    """
    path = Path(path)
    payload = {"format_version": FORMAT_VERSION, **parts}
    record = record_path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
        new = file_digest(tmp)
        # before the rename: the file on disk may be the previous one or this one
        write_record(record, {path.name: [new, *_recorded(record, path.name)[:2]]})
    write_record(record, {path.name: new})
    return path


def record_path(path: str | Path) -> Path:
    """The size+hash record of checkpoint ``path``: ``<name>.record.json`` next to it."""
    path = Path(path)
    return path.with_name(path.name + ".record.json")


def _recorded(record: Path, name: str) -> list[Digest]:
    """The digests ``record`` lists for ``name`` ([] when there is no readable record)."""
    try:
        return list(json.loads(record.read_text())["files"][name])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def verify_checkpoint(path: str | Path) -> str | None:
    """None when ``path`` matches the size and sha256 recorded when it was written; otherwise
    why not (no record, truncated, altered): such a checkpoint must not be resumed from."""
    return verify_record(record_path(path))


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on CPU), never running
    code from the file (``torch.load(weights_only=True)``).

    Args:
        required: Parts that must be present (e.g. :data:`RESUME_PARTS`).

    Raises:
        FileNotFoundError: No file at ``path``.
        CheckpointError (a ``ValueError``): truncated / corrupt / unsafe file, unknown format
            version, or a required part missing; the message says what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    obj = safe_torch_load(path)
    if not isinstance(obj, dict) or obj.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: not a training checkpoint of format version {FORMAT_VERSION} (found "
            f"{obj.get('format_version') if isinstance(obj, dict) else type(obj).__name__!r}); "
            "delete it to start the run over"
        )
    absent = [p for p in required if p not in obj]
    if absent:
        raise CheckpointError(
            f"{path}: checkpoint lacks part(s) {absent} (has {sorted(obj)}); it was written by "
            "another version or cut short: delete it to start the run over"
        )
    return obj


def restore_run(
    ckpt_path: Path,
    cfg_json: str,
    tensors: Any,
    optimizer: torch.optim.Optimizer,
    losses: torch.nn.Module,
    parallelism: str,
) -> dict[str, Any] | None:
    """Restore model, optimizer, loss buffers and RNG from ``ckpt_path``; return its train state.

    ``tensors``: a :mod:`ssl_core.train.model_state` object (replicated or FSDP). None (and a
    warning naming the changed fields) when the checkpoint is of another recipe.
    """
    ck = load_checkpoint(ckpt_path, RESUME_PARTS)
    changed = recipe_changes(ck["config"], cfg_json)
    if changed:
        log.warning(
            "%s was written with other parameters (%s): starting from scratch",
            ckpt_path,
            ", ".join(changed),
        )
        return None
    fmt = ck.get("optimizer_format", "torch")
    if fmt != tensors.optimizer_format:
        raise ValueError(
            f"{ckpt_path} holds a {fmt!r} optimizer state ({'FSDP' if fmt == 'fqn' else 'DDP'}"
            f" run) but this run is {parallelism}: set distributed: to the original "
            "setting, or delete the checkpoint to start over"
        )
    try:
        tensors.load(ck["model"], ck["optimizer"], optimizer)
        losses.load_state_dict(ck["losses"])
    except (ValueError, RuntimeError, KeyError) as e:  # RuntimeError: torch's size mismatch
        raise CheckpointError(
            f"{ckpt_path} does not fit this run's model although its recipe matches:\n  "
            f"{_short(e)}\nThe file is damaged or from other code: delete it to start over."
        ) from None
    set_rng_state(ck["rng"])
    return ck["train_state"]
