"""Files a training run writes next to its checkpoint, and the checks run on the final model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ssl_core.data.dataset import ImageDataset
from ssl_core.data.normalize import normalize
from ssl_core.models.official import MODEL_FILE, save_safetensors
from ssl_core.train.ssl_model import SSLNet
from ssl_core.utils.atomic import atomic_path

CHECKPOINT = "checkpoint.pt"
MODEL = MODEL_FILE
HEAD = "head.safetensors"
HEAD_METADATA_KEY = "head_config"


def weights_sha256(module: nn.Module) -> str:
    """Hash of a module's tensors (key order), for cross-rank / cross-run equality checks."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_head(net: SSLNet, path: Path) -> Path:
    """Write the head tensors with their settings as metadata (atomically)."""
    meta = {"format": "pt", HEAD_METADATA_KEY: json.dumps(net.head_config)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.heads_state_dict().items()}
    return save_safetensors(tensors, path, meta)


def rewrite_metrics(path: Path, upto_step: int) -> None:
    """Drop metric lines past the checkpoint step (they will be produced again), and a last
    line cut short by a kill during its append (it is not JSON)."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            if ln and json.loads(ln)["step"] <= upto_step:
                keep.append(ln)
        except (ValueError, KeyError, TypeError):
            continue  # torn line (only the last can be: lines are appended one at a time)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))


@torch.no_grad()
def eval_feature_std(
    backbone: nn.Module, ds: ImageDataset, device: torch.device, n: int = 256
) -> float:
    """Std over a fixed batch (first ``n`` readable images) of l2-normalised CLS, per dim averaged."""
    items = [it for it in (ds[i] for i in range(min(len(ds), n))) if it is not None]
    if len(items) < 2:
        return float("nan")
    x = normalize(torch.stack([t for t, _ in items]).to(device))
    was = backbone.training
    backbone.eval()
    cls = backbone(x).float()  # (n, D)
    backbone.train(was)
    return float(F.normalize(cls, dim=-1).std(dim=0).mean())
