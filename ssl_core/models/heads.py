"""DINO / iBOT projection head (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers", §3.1 and App. C; Oquab et al. 2023, "DINOv2", §4 and the official ``DINOHead``).

The head maps a backbone token ``x`` to ``K`` prototype scores:

    z = MLP(x)                  # nlayers Linear (+BN) + GELU, last layer -> bottleneck (256)
    z = z / ||z||_2             # l2-normalised bottleneck
    s = W z,  W_k = g_k v_k / ||v_k||_2,  g_k = 1   # weight-normalised prototypes, no bias

With ``g`` fixed to 1 every prototype row ``W_k`` has unit norm, so ``s_k`` is a cosine similarity.
The last layer is frozen during the first epoch(s) (``cancel_last_layer_gradients``), which the
paper notes stabilises early training.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = [
    "DINOHead",
    "FeatureProjector",
    "build_mlp",
    "cancel_last_layer_gradients",
    "last_layer_grads_off",
]


def build_mlp(
    nlayers: int,
    in_dim: int,
    bottleneck_dim: int,
    hidden_dim: int,
    use_bn: bool = False,
    bias: bool = True,
) -> nn.Module:
    """``nlayers`` Linear layers with GELU (and optional BatchNorm) in between; output = bottleneck."""
    if nlayers == 1:
        return nn.Linear(in_dim, bottleneck_dim, bias=bias)
    layers: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (nlayers - 1)
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        layers.append(nn.Linear(d_in, d_out, bias=bias))
        if use_bn:
            layers.append(nn.BatchNorm1d(d_out))
        layers.append(nn.GELU())
    layers.append(nn.Linear(hidden_dim, bottleneck_dim, bias=bias))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """MLP -> l2-normalised bottleneck -> weight-normalised prototype layer (DINOv2 ``DINOHead``).

    Args:
        in_dim: backbone embedding width.
        out_dim: number of prototypes ``K`` (65,536 in DINOv2).
        hidden_dim: MLP width (2048).
        bottleneck_dim: bottleneck width (256; 384 for the largest models).
        nlayers: number of Linear layers in the MLP (3).
        use_bn: BatchNorm after hidden layers (off in DINOv2).
        mlp_bias: bias in the MLP Linear layers.
        norm_last_layer: keep the weight-norm magnitude ``g`` fixed to 1 (not trained), as upstream.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        use_bn: bool = False,
        mlp_bias: bool = True,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        nlayers = max(nlayers, 1)
        self.mlp = build_mlp(nlayers, in_dim, bottleneck_dim, hidden_dim, use_bn, mlp_bias)
        self.apply(self._init_weights)
        # prototypes W = g * v / ||v||, rows normalised (dim=0 keeps one g per output unit k)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False), dim=0)
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(not norm_last_layer)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (..., in_dim) -> prototype scores (..., out_dim)."""
        z = self.mlp(x)
        eps = 1e-6 if z.dtype == torch.float16 else 1e-12
        z = nn.functional.normalize(z, dim=-1, p=2, eps=eps)
        return self.last_layer(z)


class FeatureProjector(nn.Module):
    """Linear maps from a student's token width to its teacher's, one for the CLS token and one
    for patch tokens (feature distillation: the projected student tokens regress the frozen
    teacher's normalised tokens by cosine). Linear on purpose: the exported student backbone then
    carries the teacher's feature geometry up to one linear map, which is what kNN and linear
    probes read.

    Args:
        in_dim: student width.
        out_dim: teacher width.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.cls = nn.Linear(in_dim, out_dim)
        self.patch = nn.Linear(in_dim, out_dim)


def cancel_last_layer_gradients(
    model: nn.Module, epoch: int, freeze_last_layer_epochs: int
) -> bool:
    """Drop the gradients of every ``last_layer`` parameter while ``epoch < freeze_last_layer_epochs``.

    Call between ``backward()`` and ``optimizer.step()``. Gradients are set to ``None`` (as DINO's
    ``cancel_gradients_last_layer``) so AdamW skips those parameters entirely (no update, no weight
    decay, no moment change). Works on a bare ``DINOHead`` or on any model containing one.
    Returns True when gradients were cancelled.
    """
    if epoch >= freeze_last_layer_epochs:
        return False
    for name, p in model.named_parameters():
        if "last_layer" in name:
            p.grad = None
    return True


@contextmanager
def last_layer_grads_off(model: nn.Module, off: bool) -> Iterator[None]:
    """While ``off``, every trainable ``last_layer`` parameter stops requiring grad, so a forward
    run inside builds no graph to it and backward skips its weight gradient (the largest GEMM of
    a 65,536-prototype head). Use it while the last layer is frozen: the step drops that gradient
    anyway (:func:`cancel_last_layer_gradients`), so the update is the same, bit for bit.
    ``requires_grad`` is restored on exit. Not for DDP/FSDP-wrapped students, whose reducers
    expect a gradient for every parameter registered as trainable."""
    params = [p for n, p in model.named_parameters() if "last_layer" in n and p.requires_grad]
    if off:
        for p in params:
            p.requires_grad_(False)
    try:
        yield
    finally:
        if off:
            for p in params:
                p.requires_grad_(True)
