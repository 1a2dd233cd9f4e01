"""The loss terms of one training step, per ``train.objective`` (issue 16).

* ``dinov2`` (default; also distillation): DINO CLS loss over all crops + iBOT on block-masked
  globals (~``mask_probability`` of them) + KoLeo (Oquab et al. 2023, §4).
* ``ibot`` and ``splitmask``, the small-data modes: masked-image modelling as the main signal.
  El-Nouby et al. 2021 ("Are large-scale datasets necessary for self-supervised pre-training?")
  find denoising / MIM objectives much less sensitive to a small pretraining set (10^3-10^4
  images) than objectives that compare embeddings of augmented views. Local crops only feed the
  multi-crop DINO term, so these modes skip them in the student (they are still drawn, so the
  augmentation randomness is the same as in ``dinov2``).

``ibot``: every student global is block-masked (mask_probability forced to 1.0, ratio
U(mask_ratio_min, mask_ratio_max)); the student predicts the EMA teacher's patch prototype
distributions at the masked positions (iBOT). The cross-view DINO term is off. The CLS is
trained by *in-view masked CLS distillation* instead, weighted by ``dino_weight``: the
student's CLS on the masked crop predicts the teacher's CLS distribution on the same, unmasked
crop. Reason: kNN, the report and distillation read the exported CLS; with no CLS term it would
only get KoLeo (spread, no content) and attention side-effects, i.e. no meaningful embedding. The
in-view term is a denoising target like the patch loss (no invariance across augmented views is
asked), so it keeps to the small-data argument.

``splitmask`` (El-Nouby et al. 2021, §3): per global crop, the patches are split into two
disjoint uniformly random halves A, B (:func:`complementary_masks`). The student encodes the crop
twice, once seeing only A and once only B; each pass predicts the EMA teacher's (unmasked crop)
patch prototype distributions at the *other* half's positions (``IBOTPatchLoss`` with the
complementary masks); an InfoNCE term (tau 0.2, weighted by ``dino_weight``) pulls the two
passes' CLS together across the batch. Approximation: a hidden half is replaced by the mask
token (the backbones' iBOT path, which works for ViT and XCiT alike), not dropped from the
sequence as in SplitMask; the visible tokens can attend to mask tokens that carry position only.
This costs ~2x the attention work of dropping them. Paper's decoder + BEiT/pixel targets are
replaced by the teacher's patch prototypes (the iBOT formulation of the engine).

Collapse signal: in the small-data modes the patch head is the main signal, so the teacher
entropies the :class:`~ssl_core.train.collapse.CollapseMonitor` reads come from the teacher's
patch scores (the tokens the loss uses), not from its CLS scores.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from ssl_core.data.masking import sample_masks
from ssl_core.train.precision import autocast
from ssl_core.train.ssl_model import SSLModel

if TYPE_CHECKING:
    from ssl_core.train.step import Losses

__all__ = [
    "DISTILL_TARGETS",
    "OBJECTIVES",
    "Terms",
    "complementary_masks",
    "compute_terms",
    "feature_loss",
]

OBJECTIVES = ("dinov2", "ibot", "splitmask")


@dataclass
class Terms:
    """One step's loss and what the metrics need.

    ``dino``: the CLS-level term (DINO in ``dinov2``, in-view CLS distillation in ``ibot``,
    InfoNCE in ``splitmask``); ``entropy_logits``: the teacher scores whose entropies the collapse
    monitor reads; ``teacher_cls``: (n, D) teacher CLS (feature std)."""

    loss: Tensor
    dino: Tensor
    ibot: Tensor
    koleo: Tensor | float
    teacher_cls: Tensor
    entropy_logits: Tensor | None  # None: the target has no prototypes (feature distillation)
    n_masked: int
    feature: Tensor | float = 0.0


def complementary_masks(n: int, n_patches: int, generator: torch.Generator) -> Tensor:
    """(n, N) bool: per image a uniformly random half A (``N // 2`` patches True); ``~mask`` is
    the other half B. Disjoint and covering by construction."""
    if n_patches < 2:
        raise ValueError(f"splitting needs >= 2 patches per crop, got {n_patches}")
    order = torch.rand(n, n_patches, generator=generator).argsort(dim=1)  # (n, N)
    mask = torch.zeros(n, n_patches, dtype=torch.bool)
    return mask.scatter_(1, order[:, : n_patches // 2], True)


def _in_view_ce(student_logits: Tensor, teacher_probs: Tensor, student_temp: float) -> Tensor:
    """Mean cross-entropy H(P_t(x_i), P_s(x_i)) of aligned rows (same crop)."""
    log_p_s = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(teacher_probs.float() * log_p_s).sum(dim=-1).mean()


def compute_terms(
    objective: str,
    model: SSLModel,
    student: nn.Module,
    losses: Losses,
    crops: dict[str, list[Tensor]],
    patch_size: int,
    generator: torch.Generator,
    temp: float,
    cfg: Any,
    packed: bool,
) -> Terms:
    """Teacher and student forwards and the loss of ``objective`` (module docstring).

    Args:
        crops: ``{"global": [n_g x (B, C, G, G)], "local": [n_l x (B, C, L, L)]}``.
        patch_size: Backbone patch size (mask grid = G // patch_size).
        generator: The step's generator (mask randomness).
        temp: Teacher temperature at this step.
    """
    fns = {"dinov2": _dinov2, "ibot": _ibot, "splitmask": _splitmask, **_DISTILL_ONLY}
    if objective not in fns:
        raise ValueError(f"unknown objective {objective!r}; one of {sorted(fns)}")
    return fns[objective](model, student, losses, crops, patch_size, generator, temp, cfg, packed)


def _block_masks(globals_: Tensor, patch_size: int, probability: float, cfg: Any,
                 generator: torch.Generator) -> Tensor:  # fmt: skip
    """iBOT block masks for the student's globals: (n_g B, N) bool on their device."""
    grid = globals_.shape[-1] // patch_size
    return sample_masks(
        globals_.shape[0],
        (grid, grid),
        mask_probability=probability,
        ratio_range=(cfg.mask_ratio_min, cfg.mask_ratio_max),
        generator=generator,
    ).to(globals_.device)


def _teacher_targets(model, losses, globals_: Tensor, masks: Tensor, temp: float, precision: str):
    """Teacher outputs on the unmasked globals and its centred CLS / patch distributions."""
    with autocast(globals_.device, precision):
        t_out = model.target.teacher_forward(globals_, masks)
    t_cls = losses.teacher_probs(t_out["dino_logits"], temp, losses.dino_center)
    t_ibot = losses.teacher_probs(t_out["ibot_logits"], temp, losses.ibot_center)
    return t_out, t_cls, t_ibot


def _ibot_term(losses, s_out: dict, t_ibot: Tensor, masks: Tensor) -> Tensor:
    """iBOT loss on the masked patches (a zero that keeps the graph when none is masked)."""
    if masks.any():
        return losses.ibot(s_out["ibot_logits"], t_ibot, masks)
    return s_out["ibot_logits"].sum() * 0.0


def _dinov2(model, student, losses, crops, patch_size, generator, temp, cfg, packed) -> Terms:
    return _multicrop(model, student, losses, crops, patch_size, generator, temp, cfg, packed,
                      prototypes=True, features=False)  # fmt: skip


def feature_loss(
    s_out: dict[str, Tensor], t_out: dict[str, Tensor], t_local: Tensor | None
) -> Tensor:
    """Feature distillation: mean cosine distance of the projected student CLS of every crop to
    the teacher's CLS of the same crop, plus the same over the global crops' patch tokens
    (masked positions included: there the student predicts the teacher's token). Same-view
    targets, as "a good teacher is patient and consistent" (Beyer et al. 2022) recommends."""
    t_cls = torch.cat([t_out["cls"]] + ([t_local] if t_local is not None else []))
    cls_term = 1.0 - F.cosine_similarity(s_out["feat_cls"].float(), t_cls.float(), dim=-1).mean()
    s_patch, t_patch = s_out["feat_patch"].float(), t_out["patch_tokens"].float()
    patch_term = 1.0 - F.cosine_similarity(s_patch, t_patch, dim=-1).mean()
    return cls_term + patch_term


def _multicrop(model, student, losses, crops, patch_size, generator, temp, cfg, packed, *,
               prototypes: bool, features: bool) -> Terms:  # fmt: skip
    """DINO + iBOT on the target's prototypes (``prototypes``) and/or feature distillation
    (``features``, distillation only), + KoLeo, over multi-crop views."""
    n_g = len(crops["global"])
    globals_ = torch.cat(crops["global"])  # (n_g B, C, G, G), crop-major
    locals_ = torch.cat(crops["local"]) if crops["local"] else None  # (n_l B, C, L, L)
    masks = _block_masks(globals_, patch_size, cfg.mask_probability, cfg, generator)
    with autocast(globals_.device, cfg.precision), record_function("sslops.teacher_forward"):
        t_out = model.target.teacher_forward(globals_, masks)
        t_local = model.target.teacher_cls(locals_) if features and locals_ is not None else None

    with autocast(globals_.device, cfg.precision), record_function("sslops.student_forward"):
        s_out = student(globals_, locals_, masks, packed)
    if prototypes:
        with record_function("sslops.teacher_targets"):
            t_dino = losses.teacher_probs(t_out["dino_logits"], temp, losses.dino_center)
            t_ibot = losses.teacher_probs(t_out["ibot_logits"], temp, losses.ibot_center)
        with record_function("sslops.losses"):
            dino = losses.dino(s_out["dino_logits"], list(t_dino.chunk(n_g)))
            ibot = _ibot_term(losses, s_out, t_ibot, masks)
    else:
        dino = ibot = s_out["cls_global"].sum() * 0.0
    koleo = sum(losses.koleo(c) for c in s_out["cls_global"].chunk(n_g))
    loss = cfg.dino_weight * dino + cfg.ibot_weight * ibot + cfg.koleo_weight * koleo
    feature = feature_loss(s_out, t_out, t_local) if features else 0.0
    if features:
        loss = loss + cfg.feature_weight * feature
    entropy_logits = t_out["dino_logits"] if prototypes else None
    return Terms(loss, dino, ibot, koleo, t_out["cls"], entropy_logits, int(masks.sum()), feature)


# distillation targets (``distill.target``) -> objective; not valid for pretraining (no teacher)
DISTILL_TARGETS = {"prototypes": "dinov2", "features": "features", "both": "dinov2+features"}
_DISTILL_ONLY = {
    "features": functools.partial(_multicrop, prototypes=False, features=True),
    "dinov2+features": functools.partial(_multicrop, prototypes=True, features=True),
}


def _ibot(model, student, losses, crops, patch_size, generator, temp, cfg, packed) -> Terms:
    n_g = len(crops["global"])
    globals_ = torch.cat(crops["global"])  # (n_g B, C, G, G), crop-major
    masks = _block_masks(globals_, patch_size, 1.0, cfg, generator)  # every global masked
    t_out, t_cls, t_ibot = _teacher_targets(model, losses, globals_, masks, temp, cfg.precision)

    with autocast(globals_.device, cfg.precision):
        s_out = student(globals_, None, masks, packed)  # locals: DINO-only, skipped
    cls_term = _in_view_ce(s_out["dino_logits"], t_cls, losses.ibot.student_temp)
    ibot = _ibot_term(losses, s_out, t_ibot, masks)
    koleo = sum(losses.koleo(c) for c in s_out["cls_global"].chunk(n_g))
    loss = cfg.dino_weight * cls_term + cfg.ibot_weight * ibot + cfg.koleo_weight * koleo
    # a tiny grid can leave every block mask empty: then the CLS scores are the only signal
    entropy_logits = t_out["ibot_logits"] if masks.any() else t_out["dino_logits"]
    return Terms(loss, cls_term, ibot, koleo, t_out["cls"], entropy_logits, int(masks.sum()))


def _splitmask(model, student, losses, crops, patch_size, generator, temp, cfg, packed) -> Terms:
    n_g, b = len(crops["global"]), crops["global"][0].shape[0]
    globals_ = torch.cat(crops["global"])  # (n, C, G, G), n = n_g B, crop-major
    device, n = globals_.device, globals_.shape[0]
    grid = globals_.shape[-1] // patch_size
    n_patches = grid * grid
    half_a = complementary_masks(n, n_patches, generator).to(device)  # (n, N) seen by pass A
    # pass A hides half B (and predicts it), pass B hides half A; rows: [pass A; pass B]
    masks = torch.cat([~half_a, half_a])  # (2n, N)

    everything = torch.ones(n, n_patches, dtype=torch.bool, device=device)
    with autocast(device, cfg.precision):
        t_out = model.target.teacher_forward(globals_, everything)  # ibot_logits: (n N, K)
    # centring over all n N tokens = over the union of both passes' targets (each token once)
    t_all = losses.teacher_probs(t_out["ibot_logits"], temp, losses.ibot_center)
    t_all = t_all.reshape(n, n_patches, -1)  # (n, N, K)
    t_ibot = torch.cat([t_all[~half_a], t_all[half_a]])  # (n N, K), masks.nonzero() order

    with autocast(device, cfg.precision):
        s_out = student(torch.cat([globals_, globals_]), None, masks, packed)
    ibot = losses.ibot(s_out["ibot_logits"], t_ibot, masks)  # mean over both passes
    cls_a, cls_b = s_out["cls_global"].chunk(2)  # (n, D) each
    info = (
        sum(losses.info_nce(a, bb) for a, bb in zip(cls_a.split(b), cls_b.split(b), strict=True))
        / n_g
    )  # per global crop: the other images of the batch are the negatives
    koleo = sum(losses.koleo(c) for c in s_out["cls_global"].split(b)) / 2  # per pass, averaged
    loss = cfg.dino_weight * info + cfg.ibot_weight * ibot + cfg.koleo_weight * koleo
    return Terms(loss, info, ibot, koleo, t_out["cls"], t_out["ibot_logits"], int(masks.sum()))
