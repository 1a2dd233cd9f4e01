"""DINOv2-style Vision Transformer backbone.

Module parameter names are the official DINOv2 names (``cls_token``, ``pos_embed``,
``register_tokens``, ``mask_token``, ``patch_embed.proj``, ``blocks.N.*``, ``norm``), so
``state_dict()`` already has the official checkpoint layout (see ``ssl_core.models.official``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_core.models.block import NORM_EPS, Block
from ssl_core.models.layerscale import LayerScale
from ssl_core.models.mlp import Mlp, SwiGLUFFN
from ssl_core.models.packing import pack, resolve_packed_attention, unpack
from ssl_core.models.patch_embed import PatchEmbed
from ssl_core.models.vit_config import ViTConfig

__all__ = ["ViTConfig", "VisionTransformer"]


def token_outputs(
    norm: nn.Module, x: Tensor, num_registers: int, masks: Tensor | None
) -> dict[str, Tensor | None]:
    """Split (B, 1+R+N, D) pre-norm tokens [CLS, registers, patches] into the backbone's output
    dict (the DINOv2 keys; shared by the ViT and XCiT backbones)."""
    r = num_registers
    xn = norm(x)
    return {
        "x_norm_clstoken": xn[:, 0],  # (B, D)
        "x_norm_regtokens": xn[:, 1 : r + 1],  # (B, R, D)
        "x_norm_patchtokens": xn[:, r + 1 :],  # (B, N, D)
        "x_prenorm": x,  # (B, 1+R+N, D)
        "masks": masks,
    }


def forward_by_resolution(
    xs: list[Tensor],
    masks_list: list[Tensor | None],
    patch_size: int,
    prenorm: Callable[[Tensor, Tensor | None], Tensor],
    outputs: Callable[[Tensor, Tensor | None], dict[str, Any]],
) -> list[dict[str, Any]]:
    """One ``prenorm`` forward per input resolution (crops of equal size concatenated; a crop
    without a mask gets an all-False one when others of its size have masks), split back into
    one ``outputs`` dict per input, in input order (ViT and XCiT multi-crop forward)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(tuple(x.shape[-2:]), []).append(i)
    results: list[dict[str, Any]] = [{} for _ in xs]
    for idx in groups.values():
        x = torch.cat([xs[i] for i in idx])
        m = None
        if any(masks_list[i] is not None for i in idx):
            n = (x.shape[-2] // patch_size) * (x.shape[-1] // patch_size)
            m = torch.cat(
                [
                    masks_list[i]
                    if masks_list[i] is not None
                    else torch.zeros(xs[i].shape[0], n, dtype=torch.bool, device=x.device)
                    for i in idx
                ]
            )
        out = prenorm(x, m)
        for i, o in zip(idx, out.split([xs[i].shape[0] for i in idx]), strict=True):
            results[i] = outputs(o, masks_list[i])
    return results


class VisionTransformer(nn.Module):
    """ViT with CLS + register tokens, iBOT masking and multi-crop (naive or packed) forward.

    Args:
        config: Architecture; see :class:`ViTConfig`.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.embed_dim
        self.embed_dim = d
        self.patch_size = c.patch_size
        self.num_register_tokens = c.num_register_tokens
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))  # (1, 1, D)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.grid_size**2, d))  # (1, 1+N, D)
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, c.num_register_tokens, d))  # (1, R, D)
            if c.num_register_tokens
            else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, d))  # (1, D)
        if c.drop_path_uniform:
            dpr = [c.drop_path_rate] * c.depth
        else:
            dpr = torch.linspace(0, c.drop_path_rate, c.depth).tolist()
        ffn_cls = SwiGLUFFN if c.ffn_layer == "swiglu" else Mlp
        self.blocks = nn.ModuleList(
            Block(
                d,
                c.num_heads,
                ffn_cls(d, c.hidden_dim, bias=c.ffn_bias),
                layerscale_init=c.layerscale_init,
                drop_path=dpr[i],
                qkv_bias=c.qkv_bias,
                proj_bias=c.proj_bias,
            )
            for i in range(c.depth)
        )
        self.norm = nn.LayerNorm(d, eps=NORM_EPS)
        self.init_weights()

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """Upstream init: trunc-normal(0.02) linears and pos_embed, CLS/registers N(0, 1e-6)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm | nn.Conv2d | LayerScale):
                m.reset_parameters()

    # ---------------------------------------------------------------- tokens
    def interpolate_pos_encoding(self, h: int, w: int) -> Tensor:
        """Position embeddings for an ``h`` x ``w`` pixel input (bicubic, upstream modes).

        Args:
            h: Image height in pixels (multiple of the patch size).
            w: Image width in pixels.

        Returns:
            Tensor (1, 1 + (h/P)*(w/P), D); the stored ``pos_embed`` itself when the grid
            already matches.
        """
        h0, w0 = h // self.patch_size, w // self.patch_size
        m = self.config.grid_size
        if h0 == m and w0 == m:
            return self.pos_embed
        dtype = self.pos_embed.dtype
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]  # (1, 1, D), (1, M*M, D)
        grid = patch_pos.reshape(1, m, m, -1).permute(0, 3, 1, 2)  # (1, D, M, M)
        off = self.config.interpolate_offset
        if off:
            kw: dict[str, Any] = {"scale_factor": ((h0 + off) / m, (w0 + off) / m)}
        else:
            kw = {"size": (h0, w0)}
        grid = F.interpolate(
            grid, mode="bicubic", antialias=self.config.interpolate_antialias, **kw
        )  # (1, D, h0, w0)
        if grid.shape[-2:] != (h0, w0):
            raise RuntimeError(f"pos-embed interpolation gave {tuple(grid.shape[-2:])}")
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)  # (1, h0*w0, D)
        return torch.cat((cls_pos, patch_pos), dim=1).to(dtype)

    def prepare_tokens_with_masks(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """Embed patches, apply the iBOT mask, add CLS + pos embed, insert registers.

        Args:
            x: Images (B, C, H, W).
            masks: Optional bool (B, N) — True patches are replaced by ``mask_token``.

        Returns:
            Tokens (B, 1 + R + N, D) ordered [CLS, REG..., PATCHES].
        """
        b, _, h, w = x.shape
        t = self.patch_embed(x)  # (B, N, D)
        if masks is not None:
            if masks.shape != t.shape[:2]:
                raise ValueError(f"masks shape {tuple(masks.shape)} != {tuple(t.shape[:2])}")
            t = torch.where(masks.bool().unsqueeze(-1), self.mask_token.to(t.dtype), t)
        t = torch.cat((self.cls_token.expand(b, -1, -1), t), dim=1)  # (B, 1+N, D)
        t = t + self.interpolate_pos_encoding(h, w)
        if self.register_tokens is not None:
            reg = self.register_tokens.expand(b, -1, -1)  # (B, R, D)
            t = torch.cat((t[:, :1], reg, t[:, 1:]), dim=1)  # (B, 1+R+N, D)
        return t

    def _outputs(self, x: Tensor, masks: Tensor | None) -> dict[str, Tensor | None]:
        return token_outputs(self.norm, x, self.num_register_tokens, masks)

    # --------------------------------------------------------------- forward
    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Any]:
        """Backbone forward for one batch of equally sized images.

        Args:
            x: Images (B, C, H, W), H and W multiples of the patch size.
            masks: Optional bool (B, N_patches) iBOT mask.

        Returns:
            Dict with ``x_norm_clstoken`` (B, D), ``x_norm_regtokens`` (B, R, D),
            ``x_norm_patchtokens`` (B, N, D), ``x_prenorm`` (B, 1+R+N, D) and ``masks``.
        """
        t = self.prepare_tokens_with_masks(x, masks)
        for blk in self.blocks:
            t = blk(t)
        return self._outputs(t, masks)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised CLS token (B, D) of images (B, C, H, W)."""
        return self.forward_features(x)["x_norm_clstoken"]

    def forward_features_list(
        self,
        xs: Sequence[Tensor],
        masks_list: Sequence[Tensor | None] | None = None,
        packed: bool | str = False,
    ) -> list[dict[str, Any]]:
        """Multi-crop forward: one output dict per input tensor.

        ``packed=False`` runs one forward per resolution (inputs of equal H, W are concatenated
        along the batch). A packed forward runs every crop in one forward: token sequences are
        concatenated along the sequence axis and a block-diagonal mask keeps each image to its
        own tokens (see ``ssl_core.models.packing``):

        - ``"flex"``: ``flex_attention`` with a BlockMask, whose kernels skip the tiles that hold
          no same-image pair (compiled on CUDA; eager elsewhere, where torch 2.13 has no CPU
          backward and the eager reference computes the full scores).
        - ``"dense"``: SDPA with an (S, S) boolean mask; every kernel computes all S^2 scores.
        - ``True``: ``"flex"`` on CUDA, else ``"dense"`` (explicit fallback: on CPU eager flex
          skips nothing and cannot backpropagate).

        All paths give the same result up to float rounding. With drop-path active they differ:
        the naive path drops samples per resolution group, the packed paths drop whole packed
        rows (all crops of gcd(B_i)-strided images together).

        Args:
            xs: Crops, each (B_i, C, H_i, W_i).
            masks_list: Optional bool masks (B_i, N_i) or None per crop tensor.
            packed: ``False``, ``True``, ``"flex"`` or ``"dense"`` (above).

        Returns:
            List of :meth:`forward_features` dicts, aligned with ``xs``.
        """
        masks_list = list(masks_list) if masks_list is not None else [None] * len(xs)
        if len(masks_list) != len(xs):
            raise ValueError(f"{len(xs)} inputs but {len(masks_list)} masks")
        mode = resolve_packed_attention(packed, xs[0].device) if len(xs) else None
        if mode is not None:
            tokens = [
                self.prepare_tokens_with_masks(x, m) for x, m in zip(xs, masks_list, strict=True)
            ]
            shapes = [(t.shape[0], t.shape[1]) for t in tokens]
            t, attn_mask = pack(tokens, mask=mode)  # (G, S, D), (S, S) or BlockMask (1, 1, S, S)
            for blk in self.blocks:
                t = blk(t, attn_mask=attn_mask)
            outs = unpack(t, shapes)
            return [self._outputs(o, m) for o, m in zip(outs, masks_list, strict=True)]

        def prenorm(x: Tensor, m: Tensor | None) -> Tensor:
            t = self.prepare_tokens_with_masks(x, m)
            for blk in self.blocks:
                t = blk(t)
            return t

        return forward_by_resolution(xs, masks_list, self.patch_size, prenorm, self._outputs)

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple[Any, ...]:
        """Outputs of intermediate blocks (for linear probes), as upstream.

        Args:
            x: Images (B, C, H, W).
            n: Last ``n`` blocks if an int, else the block indices to return.
            reshape: Return patch tokens as (B, D, H/P, W/P) maps instead of (B, N, D).
            return_class_token: Return ``(patch_tokens, cls_token)`` pairs; cls is (B, D).
            norm: Apply the final LayerNorm to every returned layer.

        Returns:
            Tuple over selected layers (in block order) of patch tokens or pairs.
        """
        depth = len(self.blocks)
        take = set(range(depth - n, depth)) if isinstance(n, int) else set(n)
        if not take <= set(range(depth)):
            raise ValueError(f"layer indices {sorted(take)} out of range for depth {depth}")
        t = self.prepare_tokens_with_masks(x)
        outputs = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in take:
                outputs.append(self.norm(t) if norm else t)
        cls = [o[:, 0] for o in outputs]  # (B, D) each
        patches = [o[:, 1 + self.num_register_tokens :] for o in outputs]  # (B, N, D) each
        if reshape:
            b, _, h, w = x.shape
            hp, wp = h // self.patch_size, w // self.patch_size
            patches = [p.reshape(b, hp, wp, -1).permute(0, 3, 1, 2).contiguous() for p in patches]
        if return_class_token:
            return tuple(zip(patches, cls, strict=True))
        return tuple(patches)
