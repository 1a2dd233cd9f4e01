"""One DINOv2 training step (Oquab et al. 2023, §4; official ``SSLMetaArch.forward_backward``).

    crops    = multi-crop(x)                   # 2 globals (G px) + L locals (G/2 px), on device
    masks    = block masks on ~p of the globals, ratio U(0.1, 0.5)
    teacher  : globals, no mask, no drop-path   -> CLS / patch prototype scores
    P_t      = Sinkhorn-Knopp(scores / tau_t)  # or softmax centring
    student  : masked globals + locals (packed or one forward per resolution)
    L = w_dino * DINO(P_s(all crops), P_t(globals)) + w_ibot * iBOT(masked patches)
        + w_koleo * sum_globals KoLeo(student CLS)

That is ``train.objective: dinov2`` (and distillation). The small-data objectives ``ibot`` and
``splitmask`` (masked-image modelling as the main signal) replace the forwards and the loss
terms: :mod:`ssl_core.train.objectives`. Backward, optimiser and EMA steps are shared.

Packing: one packed forward of all crops saves kernel launches. With a dense block-diagonal
mask a packed row does (sum of lengths)^2 attention work instead of sum(length^2) and measured no
faster on CPU; the block-skipping path (flex_attention ``BlockMask``, compiled, CUDA only) has
not been measured on a GPU yet (``benchmarks/gpu_check.py`` does). So ``packed="auto"`` means
naive everywhere until a measurement shows packing faster; ``packed="true"`` opts in.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from ssl_core.data.augment import MultiCropAugmentation
from ssl_core.loss.centering import SoftmaxCenter, sinkhorn_knopp
from ssl_core.loss.dino import DINOLoss
from ssl_core.loss.ibot import IBOTPatchLoss
from ssl_core.loss.info_nce import InfoNCELoss
from ssl_core.loss.koleo import KoLeoLoss
from ssl_core.loss.soft_ce import scaled_log_softmax
from ssl_core.models.heads import cancel_last_layer_gradients, last_layer_grads_off
from ssl_core.train.objectives import DISTILL_TARGETS, compute_terms
from ssl_core.train.ssl_model import SSLModel
from ssl_core.utils.distributed import distributed_on

__all__ = ["INFO_NCE_TEMP", "Losses", "resolve_packed", "softmax_entropies", "train_step"]

# InfoNCE temperature of the splitmask objective (SimCLR-style range 0.1-0.5)
INFO_NCE_TEMP = 0.2


def resolve_packed(packed: str | bool, device: torch.device) -> bool:
    """``auto`` → naive (one forward per crop size) on every device until a GPU measurement shows
    packing faster (module docstring); ``true`` → packed (flex on CUDA, dense mask elsewhere)."""
    if isinstance(packed, bool):
        return packed
    return packed == "true"


class Losses(nn.Module):
    """The loss terms plus the softmax-centring state (buffers, so they are checkpointed)."""

    def __init__(self, out_dim: int, student_temp: float, centering: str) -> None:
        super().__init__()
        self.centering = centering
        self.dino = DINOLoss(student_temp)
        self.ibot = IBOTPatchLoss(student_temp)
        self.koleo = KoLeoLoss()
        self.info_nce = InfoNCELoss(INFO_NCE_TEMP)  # splitmask only; no state
        self.dino_center = SoftmaxCenter(out_dim)
        self.ibot_center = SoftmaxCenter(out_dim)

    @torch.no_grad()
    def teacher_probs(self, logits: Tensor, temp: float, center: SoftmaxCenter) -> Tensor:
        """Centred, sharpened teacher targets (rows sum to 1). ``logits``: (n, K)."""
        if logits.shape[0] == 0:
            return logits.float()
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(logits, temp, n_iterations=3)
        probs = center.softmax_center_teacher(logits, temp)
        center.update_center(logits)
        return probs


@torch.no_grad()
def softmax_entropies(logits: Tensor, temp: float) -> tuple[float, float]:
    """Mean per-sample entropy and entropy of the batch-mean distribution of softmax(t/temp)."""
    log_p = scaled_log_softmax(logits, 1.0 / temp)  # (n, K), float32 for bf16 logits
    p = torch.exp(log_p)
    h_sample = -torch.dot(p.flatten(), log_p.flatten()) / p.shape[0]  # p log p, exact at p = 0
    pm = p.mean(0)
    h_mean = -(pm * torch.log(pm.clamp_min(1e-12))).sum()
    return float(h_sample), float(h_mean)


def train_step(
    model: SSLModel,
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    losses: Losses,
    images: Tensor,
    augment: MultiCropAugmentation,
    generator: torch.Generator,
    sched: dict[str, float],
    cfg: Any,
    packed: bool,
) -> dict[str, float]:
    """Forward, backward, optimiser step and EMA update for one batch.

    Args:
        model: Student + EMA (+ frozen teacher); targets come from ``model.target``.
        student: ``model.student`` or its ``DistributedDataParallel`` wrapper (called).
        optimizer: AdamW over ``model.student`` with ``lr_multiplier``/``wd_multiplier`` groups.
        losses: Loss terms (+ softmax centres).
        images: (B, C, H, W) float images in [0, 1], already on the training device.
        augment: Multi-crop augmentation (2 globals + ``cfg.n_local_crops`` locals).
        generator: CPU generator for the augmentation and mask randomness of this step.
        sched: Schedule values at this step (:meth:`Schedules.at`).
        cfg: ``TrainConfig`` / ``DistillConfig`` (objective, weights, mask settings, grad clip).
        packed: Student forward with sequence packing.

    Returns:
        Floats: ``loss``, ``dino_loss``, ``ibot_loss``, ``koleo_loss``, ``grad_norm``,
        ``teacher_entropy`` (mean per-sample), ``teacher_marginal_entropy`` (batch mean),
        ``feature_std`` (normalised teacher CLS, std per dim averaged), ``n_masked``. In the
        small-data objectives ``dino_loss`` is the CLS-level term (in-view CLS distillation for
        ``ibot``, InfoNCE for ``splitmask``) and the entropies are of the teacher's patch
        scores (:mod:`ssl_core.train.objectives`), so the keys stay the same in every mode.
    """
    with record_function("sslops.augment"):
        crops = augment(images, generator=generator)
    # TrainConfig.objective; DistillConfig.target picks prototypes and/or feature distillation
    objective = getattr(cfg, "objective", None) or DISTILL_TARGETS[cfg.target]
    frozen = sched["last_layer_lr_mult"] == 0.0
    # a frozen last layer's gradient is dropped below: not computing it is the same update
    # (single process only: DDP/FSDP reducers expect every trainable parameter's gradient)
    with last_layer_grads_off(model.student, frozen and not distributed_on()):
        t = compute_terms(
            objective,
            model,
            student,
            losses,
            crops,
            augment.patch_size,
            generator,
            sched["teacher_temp"],
            cfg,
            packed,
        )
    loss, dino, ibot, koleo = t.loss, t.dino, t.ibot, t.koleo

    lr, wd = sched["lr"], sched["wd"]
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_multiplier", 1.0)
        g["weight_decay"] = wd * g.get("wd_multiplier", 1.0)
    optimizer.zero_grad(set_to_none=True)
    with record_function("sslops.backward"):
        loss.backward()
    with record_function("sslops.clip"):
        cancel_last_layer_gradients(model.student, 0 if frozen else 1, 1)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in model.student.parameters() if p.grad is not None], cfg.grad_clip
        )
    with record_function("sslops.optimizer"):
        optimizer.step()
    with record_function("sslops.ema"):
        model.update_teacher(sched["momentum"])

    with torch.no_grad():
        feats = F.normalize(t.teacher_cls.float(), dim=-1)
        feature_std = float(feats.std(dim=0).mean())
    rec = {
        "loss": float(loss.detach()),
        "dino_loss": float(dino.detach()),
        "ibot_loss": float(ibot.detach()),
        "koleo_loss": _float(koleo),
        "grad_norm": float(grad_norm),
    }
    if t.entropy_logits is not None:  # no prototypes (feature distillation): no entropies
        h_sample, h_mean = softmax_entropies(t.entropy_logits, sched["teacher_temp"])
        rec["teacher_entropy"], rec["teacher_marginal_entropy"] = h_sample, h_mean
        rec["log_k"] = math.log(t.entropy_logits.shape[-1])
    if not isinstance(t.feature, float):
        rec["feature_loss"] = _float(t.feature)
    return {**rec, "feature_std": feature_std, "n_masked": t.n_masked}


def _float(x: Tensor | float) -> float:
    return float(x.detach()) if torch.is_tensor(x) else float(x)
