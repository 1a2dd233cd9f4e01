"""The patch embedding's matrix-product forward equals the strided convolution it replaces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_core.models.patch_embed import PatchEmbed


@pytest.mark.parametrize(("size", "patch"), [(28, 14), (56, 14), (32, 16), (24, 8)])
def test_equals_strided_conv_values_and_grads(size: int, patch: int) -> None:
    torch.manual_seed(0)
    pe = PatchEmbed(patch, 3, 32).double()
    x = torch.rand(5, 3, size, size, dtype=torch.float64)
    out = pe(x)
    ref = F.conv2d(x, pe.proj.weight, pe.proj.bias, stride=patch).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (pe.proj.weight, pe.proj.bias), g)
    grads_ref = torch.autograd.grad(ref, (pe.proj.weight, pe.proj.bias), g)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_keeps_the_official_parameter_layout() -> None:
    pe = PatchEmbed(14, 3, 384)
    assert isinstance(pe.proj, torch.nn.Conv2d)
    assert dict(pe.named_parameters())["proj.weight"].shape == (384, 3, 14, 14)
