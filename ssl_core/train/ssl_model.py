"""Student / teacher networks of DINOv2 self-distillation (Oquab et al. 2023, §4; official
``SSLMetaArch``).

``SSLNet`` is one backbone plus its DINO head (and an optional separate iBOT head). Its
``forward`` is the whole student computation of a step, so it can be wrapped in
``DistributedDataParallel`` as one module. ``SSLModel`` holds the trained student, its EMA copy
(the teacher in pretraining; the final model in distillation) and, for distillation, a frozen
external teacher.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ssl_core.models.heads import DINOHead, FeatureProjector
from ssl_core.models.presets import Backbone

__all__ = ["SSLModel", "SSLNet", "make_head_config"]


def make_head_config(
    out_dim: int,
    hidden_dim: int,
    bottleneck_dim: int,
    nlayers: int = 3,
    separate_ibot_head: bool = False,
    use_bn: bool = False,
    norm_last_layer: bool = True,
    feature_dim: int | None = None,
) -> dict[str, Any]:
    """Head settings as a JSON-serialisable dict (stored next to the head weights).

    ``out_dim`` 0: no prototype head (a bare backbone, e.g. an official release used as a
    teacher, or a student distilled on features only). ``feature_dim``: width of the teacher
    whose tokens a :class:`FeatureProjector` maps the student's to (feature distillation)."""
    cfg: dict[str, Any] = dict(
        out_dim=int(out_dim),
        hidden_dim=int(hidden_dim),
        bottleneck_dim=int(bottleneck_dim),
        nlayers=int(nlayers),
        separate_ibot_head=bool(separate_ibot_head),
        use_bn=bool(use_bn),
        norm_last_layer=bool(norm_last_layer),
    )
    if feature_dim:  # absent otherwise: heads saved before feature distillation stay identical
        cfg["feature_dim"] = int(feature_dim)
    return cfg


class SSLNet(nn.Module):
    """Backbone + DINO head (+ separate iBOT head) (+ feature projector).

    Args:
        backbone: The ViT or XCiT.
        head: Head settings from :func:`make_head_config` (``out_dim`` 0: no prototype head).
    """

    def __init__(self, backbone: Backbone, head: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_config = dict(head)
        d = backbone.embed_dim

        def mk() -> DINOHead:
            return DINOHead(
                d,
                head["out_dim"],
                head["hidden_dim"],
                head["bottleneck_dim"],
                head["nlayers"],
                # heads saved before these options: no BN, fixed prototype norms
                use_bn=bool(head.get("use_bn", False)),
                norm_last_layer=bool(head.get("norm_last_layer", True)),
            )

        has_head = int(head["out_dim"]) > 0
        self.dino_head = mk() if has_head else None
        self.ibot_head = mk() if has_head and head["separate_ibot_head"] else None
        fd = head.get("feature_dim")
        self.feature_proj = FeatureProjector(d, int(fd)) if fd else None

    @property
    def has_prototypes(self) -> bool:
        """Whether the net scores tokens against prototypes (has a DINO head)."""
        return self.dino_head is not None

    @property
    def patch_head(self) -> DINOHead:
        """Head used for masked patch tokens (shared with the CLS head unless separate)."""
        if self.dino_head is None:
            raise ValueError("this network has no prototype head (head out_dim 0)")
        return self.ibot_head if self.ibot_head is not None else self.dino_head

    def heads_state_dict(self) -> dict[str, Tensor]:
        """Head tensors only (``dino_head.*``, ``ibot_head.*``)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def forward(
        self, global_crops: Tensor, local_crops: Tensor | None, masks: Tensor, packed: bool
    ) -> dict[str, Tensor]:
        """Student pass over all crops.

        Args:
            global_crops: (n_g * B, C, G, G), crop-major.
            local_crops: (n_l * B, C, L, L) crop-major, or None.
            masks: bool (n_g * B, N) iBOT masks for the global crops.
            packed: One packed forward of all crops instead of one per resolution.

        Returns:
            ``cls_global`` (n_g B, D) backbone CLS of the global crops; with a prototype head
            ``dino_logits`` (n_g B + n_l B, K) head outputs on all CLS tokens (globals first)
            and ``ibot_logits`` (M, K) on the M masked patch tokens (``masks.nonzero()``
            order); with a feature projector ``feat_cls`` (n_g B + n_l B, D_t) and
            ``feat_patch`` (n_g B, N, D_t), the projected CLS of every crop and patch tokens
            of the global crops.
        """
        xs = [global_crops] + ([local_crops] if local_crops is not None else [])
        outs = self.backbone.forward_features_list(xs, [masks] + [None] * (len(xs) - 1), packed)
        cls_g = outs[0]["x_norm_clstoken"]  # (n_g B, D)
        cls_all = torch.cat([o["x_norm_clstoken"] for o in outs])  # (n_g B + n_l B, D)
        out = {"cls_global": cls_g}
        if self.dino_head is not None:
            patches = outs[0]["x_norm_patchtokens"][masks]  # (M, D)
            out["dino_logits"], out["ibot_logits"] = self._heads(cls_all, patches)
        if self.feature_proj is not None:
            out["feat_cls"] = self.feature_proj.cls(cls_all)
            out["feat_patch"] = self.feature_proj.patch(outs[0]["x_norm_patchtokens"])
        return out

    def _heads(self, cls: Tensor, patches: Tensor) -> tuple[Tensor, Tensor]:
        """Prototype scores of CLS tokens and patch tokens.

        A shared head without BatchNorm scores both in one call. With BatchNorm each token type
        is normalised with its own batch statistics (separate calls); a batch of < 2 tokens
        uses the running statistics (batch statistics of one sample are undefined).
        """
        if self.ibot_head is None and not self.head_config.get("use_bn", False):
            logits = self.dino_head(torch.cat((cls, patches)))
            dino, ibot = logits.split([cls.shape[0], patches.shape[0]])
            return dino, ibot
        return _call_head(self.dino_head, cls), _call_head(self.patch_head, patches)

    @torch.no_grad()
    def teacher_forward(self, global_crops: Tensor, masks: Tensor) -> dict[str, Tensor]:
        """Teacher pass: unmasked global crops only.

        Returns:
            ``cls`` (n_g B, D) normalised CLS; ``patch_tokens`` (n_g B, N, D) normalised patch
            tokens; with a prototype head ``dino_logits`` (n_g B, K) and ``ibot_logits``
            (M, K) on the patch positions that the student saw masked.
        """
        out = self.backbone.forward_features(global_crops)
        cls = out["x_norm_clstoken"]  # (n_g B, D)
        res = {"cls": cls, "patch_tokens": out["x_norm_patchtokens"]}
        if self.dino_head is not None:
            patches = out["x_norm_patchtokens"][masks]  # (M, D)
            res["dino_logits"], res["ibot_logits"] = self._heads(cls, patches)
        return res

    @torch.no_grad()
    def teacher_cls(self, crops: Tensor) -> Tensor:
        """Normalised CLS (n, D) of unmasked crops of any size (feature targets of locals)."""
        return self.backbone.forward_features(crops)["x_norm_clstoken"]


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _call_head(head: DINOHead, x: Tensor) -> Tensor:
    bns = _batchnorms(head)
    if x.shape[0] >= 2 or not any(m.training for m in bns):
        return head(x)
    modes = [m.training for m in bns]
    try:
        for m in bns:
            m.eval()
        return head(x)
    finally:
        for m, t in zip(bns, modes, strict=True):
            m.train(t)


def _freeze(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


class SSLModel(nn.Module):
    """Student, its EMA copy and (distillation only) a frozen external teacher.

    In pretraining ``teacher`` is None and the EMA copy provides the targets. In distillation
    the frozen ``teacher`` provides them and the EMA copy is only the final model.

    Args:
        student: The trained network.
        teacher: Frozen target network for distillation, or None.
    """

    def __init__(self, student: SSLNet, teacher: SSLNet | None = None) -> None:
        super().__init__()
        self.student = student
        self.ema = _freeze(copy.deepcopy(student))
        self.teacher = _freeze(teacher) if teacher is not None else None
        if teacher is not None and student.has_prototypes:
            k_s, k_t = student.head_config["out_dim"], teacher.head_config["out_dim"]
            if k_s != k_t:
                raise ValueError(f"student head has {k_s} prototypes, teacher head {k_t}")

    @property
    def target(self) -> SSLNet:
        """Network whose outputs are the targets (teacher if given, else the EMA)."""
        return self.teacher if self.teacher is not None else self.ema

    def train(self, mode: bool = True) -> SSLModel:
        """Only the student ever trains; EMA and teacher stay in eval (no drop-path).

        BatchNorm layers of the target networks (``head_use_bn``) follow ``mode`` instead: like
        DINO's teacher they normalise with the statistics of the batch they score.
        """
        self.training = mode
        self.student.train(mode)
        for net in (self.ema, self.teacher):
            if net is None:
                continue
            net.eval()
            for m in _batchnorms(net):
                m.train(mode)
        return self

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Student + EMA tensors (the frozen teacher is an input, not state)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    @torch.no_grad()
    def update_teacher(self, m: float) -> None:
        """EMA update ``ema <- m * ema + (1 - m) * student`` (all parameters).

        The backbone's floating-point buffers (BatchNorm running statistics: XCiT's stem and
        LPI; a ViT has none) are averaged the same way, as timm's ``ModelEma`` does: in
        distillation the EMA never runs a forward, so its eval-mode statistics would otherwise
        stay at their initial values.
        """
        for net in (self.ema, self.student):  # FSDP2 roots keep params gathered after forward
            if hasattr(net, "reshard"):
                net.reshard()
        ema_p = [p for p in self.ema.parameters()]
        st_p = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(ema_p, m)
        torch._foreach_add_(ema_p, st_p, alpha=1.0 - m)
        pairs = zip(self.ema.backbone.buffers(), self.student.backbone.buffers(), strict=True)
        for eb, sb in pairs:
            if eb.is_floating_point():
                eb.lerp_(sb, 1.0 - m)
