"""XCiT backbone (El-Nouby et al. 2021, "XCiT: Cross-Covariance Image Transformers").

    patches = ConvStem(x) (+ iBOT mask token) + Fourier(grid)  # (B, N, D), any H x W grid
    L x XCA block:  t = t + ls1 * XCA(norm1 t)                 # channel attention, O(N d_h D)
                    t = t + ls3 * LPI(norm3 t)                 # depth-wise 3x3 convs on the grid
                    t = t + ls2 * MLP(norm2 t)
    2 x class attention: c = [CLS, REG...] attends over [c, patches]; patches pass unchanged
    outputs = norm([c, patches])                               # the ViT backbone's output dict

Cross-covariance attention, per head with d_h = D / heads channels and tokens n = 1..N::

    q̂[:, i] = q[:, i] / ||q[:, i]||, k̂ likewise     (channel i, L2 norm over the N tokens)
    A[i, j] = softmax_j(τ Σ_n q̂[n, i] k̂[n, j])       (d_h x d_h, learned τ per head)
    out[n, i] = Σ_j A[i, j] v[n, j]                   (i.e. V Aᵀ: linear in N)

This is the paper's ``V · softmax(K̂ᵀQ̂ / τ)`` with the reference code's conventions (the
temperature multiplies; the softmax runs over the key channels).

The backbone interface is the one :class:`~ssl_core.models.vit.VisionTransformer` offers the
training engine (``forward_features``, ``forward_features_list``, ``get_intermediate_layers``,
``embed_dim``, ``patch_size``, ``num_register_tokens``, ``mask_token``, ``config``). Differences:

* **CLS and registers join at class attention.** As in the paper, the XCA blocks see patch
  tokens only; the CLS token (and the registers) first appear in the class-attention layers,
  where they are the queries (CaiT with 1 + R class tokens) and attend over themselves and the
  patches. Registers (Darcet et al. 2024) are supported there rather than refused: XCA has no
  token-to-token attention map, so the high-norm artifact they cure in ViTs has no counterpart in
  the XCA blocks; class attention is the only place tokens attend to tokens, and registers give
  its readout extra global slots to put attention mass and information in. This also keeps the
  recipe default (``num_register_tokens: 4``) working and lets ViT and XCiT students share one
  distillation config. ``x_prenorm`` is ordered [CLS, REG..., PATCHES] as in the ViT.
* **Class attention updates only the class tokens**, CaiT-style. (The reference code adds
  ``gamma1 * norm1(patches)`` to the patches in each class-attention block and, with
  ``tokens_norm``, layer-norms them; here patch tokens leave the XCA stage unchanged and get only
  the final norm, so the iBOT patch outputs are those of the last XCA block.)
* **No sequence packing**: XCA's L2 normalisation and LPI's convolution are per image, so the
  block-diagonal trick of ``ssl_core.models.packing`` does not apply; ``packed`` other than
  ``False`` raises ``ValueError`` (the engine's ``packed: auto`` resolves to ``False``).
* **BatchNorm** (stem and LPI, as the paper; not SyncBatchNorm) normalises with batch statistics
  in training. The engine keeps target networks' BatchNorm in training mode (as DINO does) and
  averages the backbone's running statistics into its EMA (``SSLModel.update_teacher``).
* **Patch sizes**: the paper's stem exists for 8 and 16; :func:`~ssl_core.models.xcit_config.
  stem_stages` extends it to ``2**k * r`` (e.g. 4, 7, 14; patch 7 is a single 7x7/7 conv + BN).

Parameter names follow the reference where it has the module (``attn.qkv``, ``attn.temperature``,
``local_mp.{conv1,bn,conv2}``, ``norm1..3``, ``cls_attn_blocks``); layer-scales are
``ls1..3.gamma`` for the reference's ``gamma1..3``. ``temperature`` is stored as (heads,), so the
optimiser groups apply no weight decay to it (the reference lists it in ``no_weight_decay``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_core.models.attention import sdpa
from ssl_core.models.block import NORM_EPS
from ssl_core.models.drop_path import drop_add_residual_stochastic_depth
from ssl_core.models.layerscale import LayerScale
from ssl_core.models.mlp import Mlp
from ssl_core.models.vit import forward_by_resolution, token_outputs
from ssl_core.models.xcit_config import XCiTConfig, stem_stages

__all__ = ["XCA", "LPI", "ClassAttentionBlock", "ConvPatchEmbed", "XCiT", "XCiTConfig"]


def _layerscale(dim: int, init: float | None) -> nn.Module:
    return LayerScale(dim, init) if init is not None else nn.Identity()


class ConvPatchEmbed(nn.Module):
    """Convolutional stem: conv (no bias) + BatchNorm per stage, GELU between stages.

    Widths double per stage up to D (D/8, D/4, D/2, D for patch 16), as the paper's stem.

    Args:
        patch_size: Total stride; stages from :func:`stem_stages`.
        in_chans: Input channels C.
        embed_dim: Token width D.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        stages = stem_stages(patch_size)
        n = len(stages)
        layers: list[nn.Module] = []
        c_in = in_chans
        for i, (k, s) in enumerate(stages):
            c_out = embed_dim // 2 ** (n - 1 - i)
            if i:
                layers.append(nn.GELU())
            pad = k // 2 if s < k else 0  # 3x3/2 convs pad 1; r x r/r convs tile exactly
            layers += [nn.Conv2d(c_in, c_out, k, stride=s, padding=pad, bias=False)]
            layers += [nn.BatchNorm2d(c_out)]
            c_in = c_out
        self.proj = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Images (B, C, H, W), sides multiples of the patch size -> ((B, N, D), (H/P, W/P))."""
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(x.shape)}")
        _, c, h, w = x.shape
        p = self.patch_size
        if c != self.in_chans:
            raise ValueError(f"expected {self.in_chans} channels, got {c}")
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of patch size {p}")
        y = self.proj(x)  # (B, D, H/P, W/P)
        return y.flatten(2).transpose(1, 2), (y.shape[2], y.shape[3])  # (B, N, D) row-major


class FourierPosEncoding(nn.Module):
    """Sinusoidal encoding of the grid coordinates, projected to D (the paper's, after DETR).

    Row and column indices are scaled to (0, 2π] over the actual grid, so every grid size and
    aspect ratio gets an encoding (no interpolation): feature ``[sin(y/f_0), cos(y/f_0), ...,
    sin(x/f_0), cos(x/f_0), ...]`` with ``f_m = T^(2m / pos_dim)``, then a linear map to D.

    Args:
        embed_dim: Token width D.
        pos_dim: Features per axis (even).
        temperature: T.
    """

    def __init__(self, embed_dim: int, pos_dim: int = 32, temperature: float = 10000.0) -> None:
        super().__init__()
        self.pos_dim = pos_dim
        self.temperature = temperature
        self.proj = nn.Linear(2 * pos_dim, embed_dim)

    def features(self, h: int, w: int, device: torch.device) -> Tensor:
        """Fixed Fourier features of an ``h`` x ``w`` grid, (h*w, 2*pos_dim), row-major."""
        freqs = self.temperature ** (
            torch.arange(0, self.pos_dim, 2, device=device, dtype=torch.float32) / self.pos_dim
        )  # (pos_dim/2,)

        def axis(n: int) -> Tensor:
            c = torch.arange(1, n + 1, device=device, dtype=torch.float32) / n * (2 * math.pi)
            a = c[:, None] / freqs  # (n, pos_dim/2)
            return torch.stack((a.sin(), a.cos()), dim=-1).flatten(1)  # (n, pos_dim)

        fy = axis(h)[:, None].expand(h, w, self.pos_dim)
        fx = axis(w)[None, :].expand(h, w, self.pos_dim)
        return torch.cat((fy, fx), dim=-1).reshape(h * w, 2 * self.pos_dim)

    def forward(self, h: int, w: int) -> Tensor:
        """Encoding (1, h*w, D) for an ``h`` x ``w`` patch grid."""
        f = self.features(h, w, self.proj.weight.device).to(self.proj.weight.dtype)
        return self.proj(f)[None]


class XCA(nn.Module):
    """Cross-covariance attention (module docstring), heads of d_h = D / heads channels.

    Args:
        dim: Token width D.
        num_heads: Heads; must divide ``dim``.
        qkv_bias: Bias on the qkv projection.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads))  # τ per head
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D); every token of a sample enters the d_h x d_h maps."""
        b, n, d = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 4, 1)  # (3, B, H, dh, N)
        q, k, v = qkv.unbind(0)  # each (B, H, dh, N)
        q = F.normalize(q, dim=-1)  # unit norm over tokens, per channel
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature[:, None, None]  # (B, H, dh, dh)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).permute(0, 3, 1, 2).reshape(b, n, d)  # (B, H, dh, N) -> (B, N, D)
        return self.proj(out)


class LPI(nn.Module):
    """Local patch interaction: depth-wise 3x3 conv, GELU, BatchNorm, depth-wise 3x3 conv.

    Mixes each patch with its grid neighbours only (receptive field 5x5 over the two convs).

    Args:
        dim: Token width D (one filter per channel).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """Patch tokens (B, h*w, D), row-major grid -> (B, h*w, D)."""
        b, n, d = x.shape
        if n != h * w:
            raise ValueError(f"{n} tokens do not form a {h}x{w} grid")
        y = x.transpose(1, 2).reshape(b, d, h, w)  # (B, D, h, w)
        y = self.conv2(self.bn(self.act(self.conv1(y))))
        return y.reshape(b, d, n).transpose(1, 2)  # (B, N, D)


class XCABlock(nn.Module):
    """``t + ls1 XCA(norm1 t)``, ``t + ls3 LPI(norm3 t)``, ``t + ls2 MLP(norm2 t)``.

    Args:
        dim: Token width D.
        num_heads: XCA heads.
        hidden_dim: MLP hidden width.
        layerscale_init: Initial layer-scale value, or ``None`` for none.
        drop_path: Stochastic-depth rate of each of the three branches (training only).
        qkv_bias: Bias on the qkv projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden_dim: int,
        layerscale_init: float | None = 1.0,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = XCA(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1 = _layerscale(dim, layerscale_init)
        self.norm3 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.local_mp = LPI(dim)
        self.ls3 = _layerscale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, hidden_dim)
        self.ls2 = _layerscale(dim, layerscale_init)
        self.drop_path = drop_path

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """Patch tokens (B, h*w, D) -> (B, h*w, D)."""
        branches = (
            lambda t, _i=None: self.ls1(self.attn(self.norm1(t))),
            lambda t, _i=None: self.ls3(self.local_mp(self.norm3(t), h, w)),
            lambda t, _i=None: self.ls2(self.mlp(self.norm2(t))),
        )
        for f in branches:
            if self.training and self.drop_path > 0.0:
                x = drop_add_residual_stochastic_depth(x, f, self.drop_path)
            else:
                x = x + f(x)
        return x


class ClassAttention(nn.Module):
    """Multi-head attention of class tokens (queries) over all tokens (keys / values).

    ``qkv`` holds the q, k, v projections as the reference's; q is computed for the class tokens
    only.

    Args:
        dim: Token width D.
        num_heads: Heads; must divide ``dim``.
        qkv_bias: Bias on the q/k/v projections.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, c: Tensor, z: Tensor) -> Tensor:
        """Class tokens ``c`` (B, C, D) attend over ``z`` (B, n, D); returns (B, C, D)."""
        b, nc, d = c.shape
        n, h = z.shape[1], self.num_heads
        w, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(c, w[:d], None if bias is None else bias[:d])  # (B, C, D)
        kv = F.linear(z, w[d:], None if bias is None else bias[d:])  # (B, n, 2D)
        q = q.reshape(b, nc, h, d // h).transpose(1, 2)  # (B, H, C, dh)
        k, v = kv.reshape(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, n, dh)
        out = sdpa(q, k, v)  # (B, H, C, dh)
        return self.proj(out.transpose(1, 2).reshape(b, nc, d))


class ClassAttentionBlock(nn.Module):
    """CaiT class-attention layer: updates the class tokens, leaves the patch tokens alone.

    ``z = norm1([c, patches])``, ``c = c + ls1 CA(z[:, :C], z)``, ``c = c + ls2 MLP(norm2 c)``.

    Args:
        dim: Token width D.
        num_heads: Heads.
        hidden_dim: MLP hidden width.
        layerscale_init: Initial layer-scale value, or ``None`` for none.
        qkv_bias: Bias on the q/k/v projections.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden_dim: int,
        layerscale_init: float | None = 1.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = ClassAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1 = _layerscale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, hidden_dim)
        self.ls2 = _layerscale(dim, layerscale_init)

    def forward(self, c: Tensor, patches: Tensor) -> Tensor:
        """Class tokens (B, C, D) and patch tokens (B, N, D) -> new class tokens (B, C, D)."""
        z = self.norm1(torch.cat((c, patches), dim=1))  # (B, C+N, D)
        c = c + self.ls1(self.attn(z[:, : c.shape[1]], z))
        return c + self.ls2(self.mlp(self.norm2(c)))


class XCiT(nn.Module):
    """XCiT backbone with the ViT backbone's interface (module docstring).

    Args:
        config: Architecture; see :class:`XCiTConfig`.
    """

    supports_packing = False
    """Sequence packing is refused (module docstring)."""

    def __init__(self, config: XCiTConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.embed_dim
        self.embed_dim = d
        self.patch_size = c.patch_size
        self.num_register_tokens = c.num_register_tokens
        self.patch_embed = ConvPatchEmbed(c.patch_size, c.in_chans, d)
        self.pos_embed = FourierPosEncoding(d, c.pos_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))  # (1, 1, D)
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, c.num_register_tokens, d))  # (1, R, D)
            if c.num_register_tokens
            else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, d))  # (1, D)
        self.blocks = nn.ModuleList(
            XCABlock(d, c.num_heads, c.hidden_dim, c.layerscale_init, c.drop_path_rate, c.qkv_bias)
            for _ in range(c.depth)
        )
        self.cls_attn_blocks = nn.ModuleList(
            ClassAttentionBlock(d, c.num_heads, c.hidden_dim, c.layerscale_init, c.qkv_bias)
            for _ in range(c.cls_attn_layers)
        )
        self.norm = nn.LayerNorm(d, eps=NORM_EPS)
        self.init_weights()

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """Reference init: trunc-normal(0.02) linears and class tokens, default convs / norms."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.register_tokens is not None:
            nn.init.trunc_normal_(self.register_tokens, std=0.02)
        nn.init.zeros_(self.mask_token)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm | nn.Conv2d | nn.BatchNorm2d | LayerScale):
                m.reset_parameters()
            elif isinstance(m, XCA):
                nn.init.ones_(m.temperature)

    # ---------------------------------------------------------------- stages
    def prepare_patches(
        self, x: Tensor, masks: Tensor | None = None
    ) -> tuple[Tensor, tuple[int, int]]:
        """Stem, iBOT mask token, Fourier encoding of the actual grid.

        Args:
            x: Images (B, C, H, W).
            masks: Optional bool (B, N) — True patches are replaced by ``mask_token``.

        Returns:
            Patch tokens (B, N, D) and the grid (H/P, W/P).
        """
        t, (h, w) = self.patch_embed(x)  # (B, N, D)
        if masks is not None:
            if masks.shape != t.shape[:2]:
                raise ValueError(f"masks shape {tuple(masks.shape)} != {tuple(t.shape[:2])}")
            t = torch.where(masks.bool().unsqueeze(-1), self.mask_token.to(t.dtype), t)
        return t + self.pos_embed(h, w).to(t.dtype), (h, w)

    def class_attention(self, patches: Tensor) -> Tensor:
        """[CLS, REG...] (B, 1+R, D) after the class-attention layers over ``patches`` (B, N, D)."""
        b = patches.shape[0]
        c = self.cls_token.expand(b, -1, -1)
        if self.register_tokens is not None:
            c = torch.cat((c, self.register_tokens.expand(b, -1, -1)), dim=1)  # (B, 1+R, D)
        c = c.to(patches.dtype)
        for blk in self.cls_attn_blocks:
            c = blk(c, patches)
        return c

    def _outputs(self, x: Tensor, masks: Tensor | None) -> dict[str, Tensor | None]:
        return token_outputs(self.norm, x, self.num_register_tokens, masks)

    # --------------------------------------------------------------- forward
    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Any]:
        """Backbone forward for one batch of equally sized images.

        Args:
            x: Images (B, C, H, W), H and W multiples of the patch size (any aspect ratio).
            masks: Optional bool (B, N_patches) iBOT mask.

        Returns:
            Dict with ``x_norm_clstoken`` (B, D), ``x_norm_regtokens`` (B, R, D),
            ``x_norm_patchtokens`` (B, N, D), ``x_prenorm`` (B, 1+R+N, D) and ``masks``.
        """
        t, (h, w) = self.prepare_patches(x, masks)
        for blk in self.blocks:
            t = blk(t, h, w)
        c = self.class_attention(t)
        return self._outputs(torch.cat((c, t), dim=1), masks)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised CLS token (B, D) of images (B, C, H, W)."""
        return self.forward_features(x)["x_norm_clstoken"]

    def forward_features_list(
        self,
        xs: Sequence[Tensor],
        masks_list: Sequence[Tensor | None] | None = None,
        packed: bool | str = False,
    ) -> list[dict[str, Any]]:
        """Multi-crop forward: one forward per resolution (equal H, W concatenated on the batch).

        Args:
            xs: Crops, each (B_i, C, H_i, W_i).
            masks_list: Optional bool masks (B_i, N_i) or None per crop tensor.
            packed: Must be ``False`` or ``None`` (XCiT has no packed path; module docstring).

        Returns:
            List of :meth:`forward_features` dicts, aligned with ``xs``.

        Raises:
            ValueError: ``packed`` requested, or masks and inputs of different lengths.
        """
        if packed is not None and packed is not False:
            raise ValueError(
                f"XCiT has no packed forward (packed={packed!r}): its per-image L2 norms and "
                "grid convolutions do not fit a block-diagonal attention mask; use packed: false "
                "or auto"
            )
        masks_list = list(masks_list) if masks_list is not None else [None] * len(xs)
        if len(masks_list) != len(xs):
            raise ValueError(f"{len(xs)} inputs but {len(masks_list)} masks")
        return forward_by_resolution(
            xs,
            masks_list,
            self.patch_size,
            lambda x, m: self.forward_features(x, m)["x_prenorm"],
            self._outputs,
        )

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple[Any, ...]:
        """Outputs of intermediate XCA blocks (for linear probes), as the ViT's.

        The CLS token of XCA block ``i`` is the class-attention readout of that block's patch
        tokens (the CLS only exists after class attention); for the last block it is the
        forward's CLS.

        Args:
            x: Images (B, C, H, W).
            n: Last ``n`` XCA blocks if an int, else the block indices to return.
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
        t, (h, w) = self.prepare_patches(x)
        patches, cls = [], []
        for i, blk in enumerate(self.blocks):
            t = blk(t, h, w)
            if i in take:
                patches.append(self.norm(t) if norm else t)  # (B, N, D)
                if return_class_token:
                    c = self.class_attention(t)[:, 0]  # (B, D)
                    cls.append(self.norm(c) if norm else c)
        if reshape:
            b = x.shape[0]
            patches = [p.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous() for p in patches]
        if return_class_token:
            return tuple(zip(patches, cls, strict=True))
        return tuple(patches)

    # ------------------------------------------------------------------ cost
    def forward_flops(self, h: int, w: int) -> float:
        """Forward FLOPs (multiply-add = 2) of one ``h`` x ``w`` image, matmuls and convs only.

        Stem convs; Fourier projection 2 N (2 p) D; per XCA block 8 N D^2 (qkv + proj)
        + 4 N D d_h (the two d_h x d_h products) + 36 N D (LPI) + 4 N D H (MLP); per class
        attention layer with C = 1 + R class tokens over n = C + N tokens 4 C D^2 (q + proj)
        + 4 n D^2 (k, v) + 4 C n D + 4 C D H. Norms, softmax and activations are not counted.
        """
        c = self.config
        d, hid, p = c.embed_dim, c.hidden_dim, c.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of patch size {p}")
        flops, side_h, side_w = 0.0, h, w
        for m in self.patch_embed.proj:
            if isinstance(m, nn.Conv2d):
                side_h, side_w = side_h // m.stride[0], side_w // m.stride[1]
                k = m.kernel_size[0] * m.kernel_size[1]
                flops += 2.0 * side_h * side_w * k * m.in_channels * m.out_channels
        n = (h // p) * (w // p)
        dh = d // c.num_heads
        flops += 2.0 * n * 2 * c.pos_dim * d
        flops += c.depth * (8.0 * n * d * d + 4.0 * n * d * dh + 36.0 * n * d + 4.0 * n * d * hid)
        nc = 1 + c.num_register_tokens
        nt = nc + n
        flops += c.cls_attn_layers * (
            4.0 * nc * d * d + 4.0 * nt * d * d + 4.0 * nc * nt * d + 4.0 * nc * d * hid
        )
        return flops
