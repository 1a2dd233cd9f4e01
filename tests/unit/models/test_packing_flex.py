"""Block-skipping sequence packing (flex_attention BlockMask) vs naive and dense-mask packing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.attention.flex_attention as fa

from ssl_core.models.packing import (
    block_diagonal_mask,
    document_block_mask,
    pack,
    resolve_packed_attention,
)
from ssl_core.models.vit import VisionTransformer, ViTConfig
from ssl_core.train.flops import attention_flops

# eager flex_attention (CPU) warns once that it is not compiled; that is the point here
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

KEYS = ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm")


@pytest.fixture
def cpu_flex_backward(monkeypatch):
    """Let eager flex_attention backpropagate on CPU.

    torch 2.13's public ``flex_attention`` refuses ``requires_grad`` inputs on CPU in its device
    check (``_validate_device``); the eager higher-order op behind it (the math reference) has a
    backward. Only that check is lifted; the other validations still see the inputs.
    """
    orig = getattr(fa, "_validate_device", None)
    if orig is not None:
        monkeypatch.setattr(
            fa, "_validate_device", lambda q, k, v: orig(q.detach(), k.detach(), v.detach())
        )


def tiny_vit() -> VisionTransformer:
    """Patch 7, 28 px globals (16 patches), 2 registers; layer-scale 1.0 so blocks matter."""
    torch.manual_seed(0)
    cfg = ViTConfig(
        img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=2, layerscale_init=1.0,
        num_register_tokens=2, drop_path_rate=0.0,
    )  # fmt: skip
    m = VisionTransformer(cfg).train()
    with torch.no_grad():
        m.mask_token.normal_()
    return m


def crops(case: str) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """``per_crop``: 2 global + 4 local tensors of batch 4 (G = 4, row = 2 x 19 + 4 x 7 tokens).
    ``gcd``: globals (6) and locals (9) stacked per resolution (G = 3, row = 2 x 19 + 3 x 7)."""
    g = torch.Generator().manual_seed(0)
    if case == "per_crop":
        xs = [torch.randn(4, 3, 28, 28, generator=g) for _ in range(2)]
        xs += [torch.randn(4, 3, 14, 14, generator=g) for _ in range(4)]
        masks = [torch.rand(4, 16, generator=g) < 0.3 for _ in range(2)]
        return xs, masks + [None] * 4
    xs = [torch.randn(6, 3, 28, 28, generator=g), torch.randn(9, 3, 14, 14, generator=g)]
    return xs, [torch.rand(6, 16, generator=g) < 0.3, None]


def scalar_loss(res: list[dict]) -> torch.Tensor:
    # means keep gradients O(1), so an absolute tolerance is meaningful
    return sum(
        (r["x_norm_clstoken"] ** 2).mean() + r["x_norm_patchtokens"].sin().mean()
        + r["x_norm_regtokens"].cos().mean() for r in res
    )  # fmt: skip


def test_resolve_packed_attention():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_packed_attention(False, cpu) is None
    assert resolve_packed_attention(True, cpu) == "dense"  # eager flex skips nothing on CPU
    assert resolve_packed_attention(True, cuda) == "flex"
    assert resolve_packed_attention("dense", cuda) == "dense"
    assert resolve_packed_attention("flex", cpu) == "flex"
    with pytest.raises(ValueError, match="packed must be"):
        resolve_packed_attention("auto", cpu)


@pytest.mark.parametrize("case", ["per_crop", "gcd"])
def test_flex_and_dense_packed_equal_naive(case, cpu_flex_backward):
    xs, masks = crops(case)
    models = {p: tiny_vit() for p in (False, "dense", "flex")}
    outs = {}
    for packed, model in models.items():
        res = model.forward_features_list(xs, masks, packed=packed)
        scalar_loss(res).backward()
        outs[packed] = res
    for packed in ("dense", "flex"):
        for a, b in zip(outs[False], outs[packed], strict=True):
            for k in KEYS:
                torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=f"{packed} {k}")
            assert b["masks"] is a["masks"]
        named = zip(models[False].named_parameters(), models[packed].parameters(), strict=True)
        for (n, p0), p in named:
            assert p0.grad.abs().max() > 1e-4, n  # every parameter gets a real gradient
            torch.testing.assert_close(p.grad, p0.grad, rtol=1e-4, atol=1e-5, msg=f"{packed} {n}")
    assert outs["flex"][-1]["x_norm_regtokens"].shape == (xs[-1].shape[0], 2, 32)


def test_flex_packed_images_do_not_see_each_other():
    """Perturbing image 1 of one crop changes only that crop's output of image 1, though all
    crops of images 1 and 1 + G share one packed row; tried for each crop (segment) in turn."""
    xs, masks = crops("per_crop")
    m = tiny_vit().eval()
    with torch.no_grad():
        a = m.forward_features_list(xs, masks, packed="flex")
        for c in range(len(xs)):
            xs2 = [x.clone() for x in xs]
            xs2[c][1] += 1.0
            b = m.forward_features_list(xs2, masks, packed="flex")
            for i in range(len(xs)):
                same = torch.isclose(a[i]["x_prenorm"], b[i]["x_prenorm"], rtol=0, atol=1e-6)
                changed = ~same.flatten(1).all(dim=1)  # (B,) per image
                assert changed.tolist() == [i == c and j == 1 for j in range(4)], (c, i)


def tile_mask(lengths: list[int], bs: int) -> torch.Tensor:
    """(n, n) bool: tile (i, j) holds a same-segment pair."""
    allowed = block_diagonal_mask(lengths)  # (S, S)
    s, n = allowed.shape[0], -(-allowed.shape[0] // bs)
    padded = torch.zeros(n * bs, n * bs, dtype=torch.bool)
    padded[:s, :s] = allowed
    return padded.reshape(n, bs, n, bs).any(dim=(1, 3))


@pytest.mark.parametrize(("lengths", "bs"), [([19, 19, 7, 7, 7, 7], 16), ([261] + [54] * 4, 128)])
def test_block_mask_skips_cross_segment_tiles(lengths, bs):
    bm = document_block_mask(lengths, block_size=bs)
    s = sum(lengths)
    block = bm.BLOCK_SIZE
    assert bm.shape == (1, 1, s, s) and block == (bs, bs)
    computed = bm.to_dense()[0, 0]  # (n, n) tiles the kernels visit
    assert torch.equal(computed, tile_mask(lengths, bs))  # exactly the same-segment tiles
    assert computed.sum() < computed.numel()  # some tiles are skipped
    # "full" tiles skip mask_mod in the kernels: every pair in them must be same-segment
    full = fa._ordered_to_dense(bm.full_kv_num_blocks, bm.full_kv_indices, computed.shape[1])
    allowed = block_diagonal_mask(lengths)
    for i, j in full[0, 0].nonzero().tolist():
        assert allowed[i * bs : (i + 1) * bs, j * bs : (j + 1) * bs].all(), (i, j)
    # mask_mod itself equals the dense mask
    q, kv = torch.arange(s)[:, None], torch.arange(s)[None, :]
    assert torch.equal(bm.mask_mod(0, 0, q, kv), allowed)
    # the FLOP model counts exactly these tiles (tail tile clipped at S)
    sizes = torch.tensor([min(bs, s - t) for t in range(0, s, bs)], dtype=torch.float64)
    tile_work = (computed.double() * sizes[:, None] * sizes[None, :]).sum().item()
    assert attention_flops(lengths, 8, "flex", block_size=bs) == 4 * 8 * tile_work


def test_pack_flex_mask_shared_by_rows():
    tokens = [torch.randn(6, 19, 4), torch.randn(9, 7, 4)]
    t_dense, dense = pack(tokens)
    t_flex, bm = pack(tokens, mask="flex", block_size=16)
    assert torch.equal(t_dense, t_flex) and t_flex.shape == (3, 2 * 19 + 3 * 7, 4)
    assert isinstance(dense, torch.Tensor) and isinstance(bm, fa.BlockMask)
    s = t_flex.shape[1]
    q, kv = torch.arange(s)[:, None], torch.arange(s)[None, :]
    assert torch.equal(bm.mask_mod(0, 0, q, kv), dense)
    with pytest.raises(ValueError, match="mask must be"):
        pack(tokens, mask="sparse")  # type: ignore[arg-type]


def test_attention_flops_vit_s():
    """ViT-S/14 (D 384), 2 x 224 + 8 x 98 crops: a packed row = 1 global + 4 locals."""
    d = 384
    for r, flex_tiles in ((0, None), (4, 179_913)):
        lengths = [1 + 256 + r] + [1 + 49 + r] * 4
        naive = attention_flops(lengths, d, "naive")
        dense = attention_flops(lengths, d, "dense")
        flex = attention_flops(lengths, d, "flex")  # 128-token tiles
        assert naive == 4 * d * ((257 + r) ** 2 + 4 * (50 + r) ** 2)
        assert dense == 4 * d * sum(lengths) ** 2
        assert naive < flex < dense
        if flex_tiles is not None:  # 477 tokens: 12 of 16 tiles, hand-counted
            assert sum(lengths) == 477 and flex == 4 * d * flex_tiles
            assert dense / naive == pytest.approx(227_529 / 79_785)  # ~2.85x
            assert flex / naive == pytest.approx(2.255, abs=1e-3)
        assert attention_flops(lengths, d, "flex", block_size=64) < flex  # smaller tiles skip more
    # 1-token tiles are exactly the naive work; one tile over the row is the dense work
    assert attention_flops([5, 3, 3], d, "flex", block_size=1) == attention_flops([5, 3, 3], d)
    assert attention_flops([5, 3, 3], d, "flex", block_size=16) == 4 * d * 11**2
    with pytest.raises(ValueError, match="packed must be"):
        attention_flops([4], d, "sparse")
