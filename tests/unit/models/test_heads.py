import torch

from ssl_core.models.heads import DINOHead, cancel_last_layer_gradients


def _head(**kw):
    torch.manual_seed(0)
    return DINOHead(in_dim=16, out_dim=50, hidden_dim=32, bottleneck_dim=8, **kw)


def test_output_shape_and_cosine_range():
    head = _head()
    x = torch.randn(5, 16)
    out = head(x)
    assert out.shape == (5, 50)
    # unit bottleneck . unit prototypes -> cosine similarities
    assert out.abs().max() <= 1.0 + 1e-5
    assert head(torch.randn(2, 3, 16)).shape == (2, 3, 50)


def test_layers_and_variants():
    head = _head(nlayers=3, use_bn=True)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and any(isinstance(m, torch.nn.BatchNorm1d) for m in head.mlp)
    assert any(isinstance(m, torch.nn.GELU) for m in head.mlp)
    assert isinstance(_head(nlayers=1).mlp, torch.nn.Linear)
    assert head.last_layer.bias is None


def test_last_layer_weight_norm_rows_unit_and_g_frozen():
    head = _head()
    w = head.last_layer.weight  # (K, bottleneck), one prototype per row
    assert torch.allclose(w.norm(dim=1), torch.ones(50), atol=1e-5)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    # after an update of v the prototypes stay unit-norm
    v = head.last_layer.parametrizations.weight.original1
    with torch.no_grad():
        v.mul_(torch.rand_like(v) * 3)
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(50), atol=1e-5)
    assert _head(norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


def test_freeze_helper_only_in_early_epochs():
    head = _head()
    for epoch, frozen in [(0, True), (1, False), (5, False)]:
        head.zero_grad(set_to_none=True)
        head(torch.randn(4, 16)).sum().backward()
        assert cancel_last_layer_gradients(head, epoch, freeze_last_layer_epochs=1) is frozen
        for name, p in head.named_parameters():
            if not p.requires_grad:
                continue
            if "last_layer" in name and frozen:
                assert p.grad is None, name
            else:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
