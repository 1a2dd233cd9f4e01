"""Linear probes on cached features, following DINOv2's linear evaluation (Oquab et al. 2023).

DINOv2 (``dinov2/eval/linear.py``) trains one linear classifier per learning rate on frozen
features, all of them on the same mini-batches in one pass (SGD, momentum 0.9, cosine lr
schedule, cross-entropy, weights ~ N(0, 0.01), zero bias), and reports the head with the best
validation top-1. Its input is either the last CLS token or the concatenation of the CLS tokens
of the last 4 blocks and the average-pooled patch tokens (:func:`dinov2_linear_features`).

Differences from upstream, on purpose: features are standardised with the train split's
statistics (so one lr grid fits any backbone's feature scale), every head starts from the same
initial weights (so the heads differ only in their lr and a head does not depend on the rest of
the grid), and the lrs are not rescaled by ``batch_size / 256``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_core.data.normalize import normalize

_MOMENTUM = 0.9
_INIT_STD = 0.01  # DINOv2 LinearClassifier init
_STD_EPS = 1e-6


@dataclass
class ProbeResult:
    """The chosen linear head, its standardisation and the validation accuracy of every lr.

    Attributes:
        best_lr: Learning rate of the head with the best validation top-1 (first in grid order
            on ties).
        val_acc: Validation top-1 accuracy (0..1) per learning rate.
        weight: Chosen head's weight (D, C).
        bias: Chosen head's bias (C,).
        mean: Train-split feature mean (D,) used to standardise inputs.
        std: Train-split feature std (D,) used to standardise inputs.
    """

    best_lr: float
    val_acc: dict[float, float]
    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor

    def logits(self, x: Tensor) -> Tensor:
        """Class logits (N, C) of raw (unstandardised) features (N, D)."""
        z = (x.to(self.mean) - self.mean) / self.std
        return z @ self.weight + self.bias

    def predict(self, x: Tensor) -> Tensor:
        """Predicted class (N,) of raw features (N, D)."""
        return self.logits(x).argmax(dim=1)

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Top-1 accuracy (0..1) on raw features (N, D) with labels (N,)."""
        if len(x) == 0:
            raise ValueError("accuracy needs at least one sample")
        return (self.predict(x) == y.to(self.mean.device)).double().mean().item()


def _train_heads(
    x: Tensor,
    y: Tensor,
    n_classes: int,
    lrs: Tensor,
    epochs: int,
    batch_size: int,
    weight_decay: float,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Train L stacked heads (L, D, C) + (L, C) on standardised x over shared mini-batches."""
    n, d = x.shape
    n_heads = len(lrs)
    w0 = torch.randn(d, n_classes, generator=gen) * _INIT_STD
    w = w0.to(x.device).expand(n_heads, d, n_classes).clone().requires_grad_(True)
    b = torch.zeros(n_heads, 1, n_classes, device=x.device, requires_grad=True)
    bufs = (torch.zeros_like(w), torch.zeros_like(b))
    steps_per_epoch = math.ceil(n / batch_size)
    total, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(x.device)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            logits = torch.baddbmm(b, x[idx].expand(n_heads, -1, -1), w)  # (L, B, C)
            ce = F.cross_entropy(
                logits.reshape(-1, n_classes), y[idx].repeat(n_heads), reduction="none"
            )
            ce.view(n_heads, -1).mean(dim=1).sum().backward()  # heads' gradients stay separate
            lr_t = lrs * 0.5 * (1.0 + math.cos(math.pi * step / total))  # cosine schedule
            with torch.no_grad():
                for p, buf, wd in ((w, bufs[0], weight_decay), (b, bufs[1], 0.0)):
                    buf.mul_(_MOMENTUM).add_(p.grad + wd * p)  # torch.optim.SGD momentum
                    p.sub_(lr_t.view(-1, 1, 1) * buf)
                    p.grad = None
            step += 1
    return w.detach(), b.detach().squeeze(1)


def fit_linear_probes(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    n_classes: int,
    lrs: Sequence[float] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
    epochs: int = 100,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> ProbeResult:
    """Train one linear head per lr in a single shared pass; keep the best on validation.

    DINOv2 linear evaluation protocol (Oquab et al. 2023, ``dinov2/eval/linear.py``): SGD with
    momentum 0.9, cosine lr decay to 0 over all iterations, cross-entropy, lr grid search on a
    validation split. Deterministic under ``seed`` (one ``torch.Generator`` drives the head init
    and the per-epoch shuffles).

    Args:
        train_x: Train features (N, D). train_y: Train labels (N,) in [0, n_classes).
        val_x: Validation features (M, D). val_y: Validation labels (M,).
        n_classes: Number of classes C.
        lrs: Learning-rate grid (one head each).
        epochs: Passes over the train features.
        batch_size: Mini-batch size.
        weight_decay: L2 penalty on the head weights (not the biases).
        seed: Seed of the generator.

    Returns:
        :class:`ProbeResult` with the best head and the per-lr validation accuracies.
    """
    if not lrs or epochs < 1 or batch_size < 1:
        raise ValueError("need a non-empty lr grid, epochs >= 1 and batch_size >= 1")
    if len(train_x) == 0 or len(val_x) == 0 or train_x.shape[1] != val_x.shape[1]:
        raise ValueError("train/val features must be non-empty and of equal dimension")
    train_x, val_x = train_x.float(), val_x.float().to(train_x.device)
    train_y, val_y = train_y.long().to(train_x.device), val_y.long().to(train_x.device)
    mean, std = train_x.mean(dim=0), train_x.std(dim=0, unbiased=False).clamp_min(_STD_EPS)
    gen = torch.Generator().manual_seed(seed)
    lr_t = torch.tensor([float(lr) for lr in lrs], device=train_x.device)
    w, b = _train_heads(
        (train_x - mean) / std, train_y, n_classes, lr_t, epochs, batch_size, weight_decay, gen
    )
    with torch.no_grad():
        zv = ((val_x - mean) / std).expand(len(lrs), -1, -1)
        pred = torch.baddbmm(b.unsqueeze(1), zv, w).argmax(dim=2)  # (L, M)
        acc = (pred == val_y).double().mean(dim=1).tolist()
    best = int(np.argmax(acc))  # first maximum: grid order breaks ties
    return ProbeResult(
        best_lr=float(lrs[best]),
        val_acc={float(lr): a for lr, a in zip(lrs, acc, strict=True)},
        weight=w[best].clone(),
        bias=b[best].clone(),
        mean=mean,
        std=std,
    )


def split_bank(
    labels: np.ndarray, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/val split of the labelled kNN bank, for the lr search of linear probes.

    DINOv2 (Oquab et al. 2023) selects probe hyper-parameters on a held-out validation split;
    here it is carved out of the bank class by class: ``round(val_fraction * n_c)`` items of each
    class go to val, clamped so that every class with >= 2 items keeps at least one item on each
    side (single-item classes stay in train).

    Args:
        labels: Bank labels (N,).
        val_fraction: Fraction of each class for validation, in (0, 1).
        seed: Seed of the shuffle.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 index arrays partitioning ``range(N)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(max(round(val_fraction * len(idx)), 1), len(idx) - 1) if len(idx) > 1 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    empty = np.empty(0, dtype=np.int64)
    return (
        np.sort(np.concatenate([empty, *train])).astype(np.int64),
        np.sort(np.concatenate([empty, *val])).astype(np.int64),
    )


def dinov2_linear_features(
    backbone: nn.Module, images: Tensor, n_last_blocks: int = 4, batch_size: int = 256
) -> dict[str, Tensor]:
    """The two linear-eval inputs of DINOv2 (Oquab et al. 2023, ``create_linear_input``).

    Images in [0, 1] are ImageNet-normalised and run through the frozen backbone (eval mode,
    no grad; its training flag is restored afterwards) in batches of ``batch_size``.

    Args:
        backbone: ``VisionTransformer`` with ``get_intermediate_layers``.
        images: (N, C, H, W) in [0, 1].
        n_last_blocks: Number of last blocks whose CLS tokens are concatenated.
        batch_size: Images per forward.

    Returns:
        ``{"cls": (N, D), "cls4_avgpool": (N, (n_last_blocks + 1) * D)}`` float32 on CPU:
        the final-norm CLS token of the last block, and the final-norm CLS tokens of the last
        ``n_last_blocks`` blocks concatenated with the mean of the last block's patch tokens.
    """
    device = next(backbone.parameters()).device
    was_training = backbone.training
    cls, cat = [], []
    try:
        backbone.eval()
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                x = normalize(images[s : s + batch_size].to(device).float())
                layers = backbone.get_intermediate_layers(
                    x, n_last_blocks, return_class_token=True, norm=True
                )
                last_patch, last_cls = layers[-1]
                cls.append(last_cls.float().cpu())
                tokens = [c for _, c in layers] + [last_patch.mean(dim=1)]
                cat.append(torch.cat(tokens, dim=-1).float().cpu())
    finally:
        backbone.train(was_training)
    if not cls:
        raise ValueError("no images given")
    return {"cls": torch.cat(cls), "cls4_avgpool": torch.cat(cat)}
