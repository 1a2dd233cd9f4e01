"""What a backbone looks at: CLS attention maps and PCA of patch features (DINO / DINOv2 figures).

- :func:`cls_attention_maps`: the last block's attention of the CLS query over the patch keys,
  per head (Caron et al. 2021, "Emerging properties in self-supervised vision transformers",
  fig. 1; Darcet et al. 2024 show the artifacts registers remove there). The weights are
  recomputed from the last block's attention input, caught by a forward pre-hook during an
  ordinary eval forward: the model code and the training path are untouched.
- :func:`patch_pca_rgb`: the first 3 principal components of the patch features of a set of
  images, fitted jointly, shown as RGB (Oquab et al. 2024, "DINOv2", fig. 1).

XCiT has no token-token attention (its self-attention is over channels, and CLS attends only in
its class-attention layers), so :func:`cls_attention_maps` returns None for it; PCA works on any
backbone with ``forward_features``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_core.data.normalize import normalize
from ssl_core.models.vit import VisionTransformer

__all__ = ["cls_attention_maps", "has_token_attention", "patch_pca_rgb"]


def has_token_attention(backbone: nn.Module) -> bool:
    """Whether the backbone has token-token attention in its last block: a DINOv2-style
    :class:`VisionTransformer` (XCiT's blocks also have a ``qkv``, over channels)."""
    return isinstance(backbone, VisionTransformer) and len(backbone.blocks) > 0


def _cls_attention(attn: nn.Module, x: Tensor) -> Tensor:
    """Softmax attention of the CLS query (token 0) over all keys: (B, H, N) from the
    attention input ``x`` (B, N, D), exactly as ``scaled_dot_product_attention`` weighs them."""
    b, n, d = x.shape
    h = attn.num_heads
    qkv = attn.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # (3, B, H, N, Dh)
    q, k = qkv[0], qkv[1]  # (B, H, N, Dh)
    logits = (q[:, :, :1] @ k.transpose(-2, -1)) * (d // h) ** -0.5  # (B, H, 1, N)
    return logits.squeeze(2).float().softmax(dim=-1)  # (B, H, N)


@torch.no_grad()
def cls_attention_maps(backbone: nn.Module, images: Tensor) -> Tensor | None:
    """Per-head attention of the CLS token over the patches in the last block.

    Args:
        backbone: A :class:`~ssl_core.models.vit.VisionTransformer` (XCiT: returns None).
        images: (B, 3, S, S) floats in [0, 1] (ImageNet-normalised here), S a multiple of the
            patch size.

    Returns:
        (B, H, S/P, S/P) attention weights of CLS on each patch (registers and CLS itself are
        left out of the map; the weights are those of the full softmax, so a head that looks
        at registers has a faint map), or None for a backbone without token attention.
    """
    if not has_token_attention(backbone):
        return None
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    caught: list[Tensor] = []
    last = backbone.blocks[-1].attn
    hook = last.register_forward_pre_hook(lambda _m, args: caught.append(args[0]))
    was_training = backbone.training
    backbone.eval()
    try:
        device = next(backbone.parameters()).device
        backbone.forward_features(normalize(images.to(device)))
    finally:
        hook.remove()
        backbone.train(was_training)
    weights = _cls_attention(last, caught[-1])  # (B, H, 1+R+N)
    p = backbone.patch_size
    gh, gw = images.shape[-2] // p, images.shape[-1] // p
    patches = weights[:, :, 1 + backbone.num_register_tokens :]  # (B, H, N)
    return patches.reshape(images.shape[0], -1, gh, gw).cpu()


def _pca3(x: Tensor) -> Tensor:
    """(M, D) rows projected on their first 3 principal axes: (M, 3), zero-padded when the
    features have fewer than 3 directions of variance."""
    x = x.double() - x.double().mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)  # vh: (min(M, D), D)
    proj = x @ vh[:3].T  # (M, <=3)
    if proj.shape[1] < 3:
        proj = torch.cat([proj, proj.new_zeros(proj.shape[0], 3 - proj.shape[1])], dim=1)
    return proj


@torch.no_grad()
def patch_pca_rgb(backbone: nn.Module, images: Tensor) -> Tensor:
    """First 3 PCA components of the normalised patch tokens as RGB images.

    The PCA is fitted on the patches of all ``images`` together (so colours compare across
    images) and each component is min-max scaled to [0, 1] over all of them.

    Args:
        backbone: Any backbone whose ``forward_features`` returns ``x_norm_patchtokens``
            (B, N, D) on a square patch grid (ViT, XCiT).
        images: (B, 3, S, S) floats in [0, 1].

    Returns:
        (B, S/P, S/P, 3) float tensor in [0, 1].
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    was_training = backbone.training
    backbone.eval()
    try:
        device = next(backbone.parameters()).device
        tokens = backbone.forward_features(normalize(images.to(device)))["x_norm_patchtokens"]
    finally:
        backbone.train(was_training)
    b, n, d = tokens.shape
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"{n} patch tokens do not form a square grid")
    proj = _pca3(tokens.reshape(b * n, d).cpu())  # (B*N, 3)
    lo, hi = proj.min(dim=0).values, proj.max(dim=0).values
    rgb = (proj - lo) / (hi - lo).clamp_min(1e-12)
    return rgb.reshape(b, side, side, 3).float().clamp(0.0, 1.0)
