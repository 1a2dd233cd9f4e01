"""Head diagnostics tell a uniform (null-space) DINO head from an informative one."""

import math

import pytest
import torch

from ssl_core.eval.head_diagnostics import head_diagnostics, prototype_scores
from ssl_core.models.presets import build_vit
from ssl_core.train.ssl_model import SSLNet, make_head_config


def _net(k: int = 64, d: int = 16) -> SSLNet:
    torch.manual_seed(0)
    vit = build_vit("tiny", img_size=16, patch_size=4, depth=2, num_register_tokens=0)
    return SSLNet(vit, make_head_config(k, hidden_dim=32, bottleneck_dim=d)).eval()


def _images(n: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_scores_are_cosines():
    net = _net()
    tok = torch.randn(5, net.backbone.embed_dim)
    z, w, s = prototype_scores(net.dino_head, tok)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(w.norm(dim=1), torch.ones(w.shape[0]))
    torch.testing.assert_close(s, net.dino_head(tok))  # the head's own output


def test_planted_null_space_collapse_is_seen():
    net, x = _net(), _images()
    healthy = head_diagnostics(net, x)
    assert healthy["weak_dir_energy"] < 0.5
    head = net.dino_head
    with torch.no_grad():
        # prototypes leave the first two bottleneck axes; the MLP output lives only there
        head.last_layer.parametrizations.weight.original1[:, :2] = 0.0
        last = head.mlp[-1]
        last.weight[2:] = 0.0
        last.bias[2:] = 0.0
    bad = head_diagnostics(net, x)
    assert bad["weak_dir_energy"] > 0.99
    assert max(bad["prototype_singular_values_min"]) < 1e-5
    assert bad["logit_std_across_images"] < 1e-5
    for t, ratio in bad["entropy_ratio"].items():  # all scores ~0: uniform at any temperature
        assert ratio == pytest.approx(1.0, abs=1e-4), t
    assert healthy["entropy_ratio"]["0.04"] < bad["entropy_ratio"]["0.04"]
    assert bad["weak_dir_energy_random"] == pytest.approx(2 / 16)
    assert bad["n_prototypes"] == 64 and bad["bottleneck_dim"] == 16


def test_identical_images_have_cos_one_and_need_two():
    net = _net()
    x = _images(1).expand(4, -1, -1, -1).contiguous()
    d = head_diagnostics(net, x)
    assert d["cos_cls"] == pytest.approx(1.0, abs=1e-5)
    assert d["cos_z"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < d["entropy_ratio"]["0.1"] <= 1.0 + 1e-6
    assert math.isfinite(d["patch_weak_dir_energy"])
    with pytest.raises(ValueError, match="at least 2"):
        head_diagnostics(net, x[:1])
