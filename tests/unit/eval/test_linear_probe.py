"""Linear probes (DINOv2 linear eval) on synthetic features, bank splits and ViT feature sets."""

import numpy as np
import pytest
import torch

from ssl_core.data.normalize import normalize
from ssl_core.eval.linear_probe import dinov2_linear_features, fit_linear_probes, split_bank
from ssl_core.models.presets import build_vit

N_CLASSES, DIM = 4, 16


def _blobs(
    n: int, seed: int, noise: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4 unit-variance Gaussian blobs in 16-d, centres 20 apart (fixed); returns x, noisy y, y."""
    centres = torch.eye(N_CLASSES, DIM) * 20.0 + 5.0  # off-origin, so the bias matters
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % N_CLASSES
    x = centres[y] + torch.randn(n, DIM, generator=g)
    flip = torch.randperm(n, generator=g)[: round(noise * n)]  # exactly noise * n wrong labels
    y_noisy = y.clone()
    y_noisy[flip] = (y[flip] + torch.randint(1, N_CLASSES, (len(flip),), generator=g)) % N_CLASSES
    return x, y_noisy, y


def test_separable_blobs_are_learned_perfectly():
    (xtr, ytr, _), (xva, yva, _), (xte, yte, _) = _blobs(400, 0), _blobs(200, 1), _blobs(400, 2)
    res = fit_linear_probes(xtr, ytr, xva, yva, N_CLASSES, epochs=30)
    assert set(res.val_acc) == {1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1}
    assert res.val_acc[res.best_lr] == 1.0
    assert res.accuracy(xte, yte) == 1.0
    assert res.predict(xte).shape == (400,)
    assert res.weight.shape == (DIM, N_CLASSES) and res.bias.shape == (N_CLASSES,)
    torch.testing.assert_close(res.mean, xtr.mean(dim=0))
    torch.testing.assert_close(res.std, xtr.std(dim=0, unbiased=False))


def test_label_noise_caps_accuracy_at_the_clean_fraction():
    tr, va, te = _blobs(800, 0, 0.2), _blobs(400, 1, 0.2), _blobs(1000, 2, 0.2)
    res = fit_linear_probes(tr[0], tr[1], va[0], va[1], N_CLASSES, epochs=30)
    assert abs(res.val_acc[res.best_lr] - 0.8) <= 0.05
    assert abs(res.accuracy(te[0], te[1]) - 0.8) <= 0.05  # noisy test labels
    assert res.accuracy(te[0], te[2]) >= 0.97  # the blobs themselves are still separated


def test_absurdly_small_lr_is_not_chosen():
    (xtr, ytr, _), (xva, yva, _) = _blobs(400, 0), _blobs(200, 1)
    res = fit_linear_probes(xtr, ytr, xva, yva, N_CLASSES, lrs=(1e-7, 1e-2, 1e-1), epochs=20)
    assert res.best_lr != 1e-7
    assert res.val_acc[1e-7] < 0.9 < res.val_acc[res.best_lr]


def test_same_seed_same_result_and_heads_independent_of_grid():
    (xtr, ytr, _), (xva, yva, _) = _blobs(300, 0, 0.2), _blobs(100, 1, 0.2)
    kw = {"lrs": (1e-2, 1e-1), "epochs": 5, "batch_size": 64}
    a = fit_linear_probes(xtr, ytr, xva, yva, N_CLASSES, seed=3, **kw)
    b = fit_linear_probes(xtr, ytr, xva, yva, N_CLASSES, seed=3, **kw)
    assert a.val_acc == b.val_acc and a.best_lr == b.best_lr
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    c = fit_linear_probes(xtr, ytr, xva, yva, N_CLASSES, seed=4, **kw)
    assert not torch.equal(a.weight, c.weight)
    # one lr alone trains the same head as inside the grid (shared batches, same init)
    kw1 = {**kw, "lrs": (a.best_lr,)}
    single = fit_linear_probes(xtr, ytr, xva, yva, N_CLASSES, seed=3, **kw1)
    torch.testing.assert_close(single.weight, a.weight, rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise():
    x, y, _ = _blobs(8, 0)
    with pytest.raises(ValueError):
        fit_linear_probes(x, y, x, y, N_CLASSES, lrs=())
    with pytest.raises(ValueError):
        fit_linear_probes(x, y, x[:, :3], y, N_CLASSES)
    with pytest.raises(ValueError):
        split_bank(np.zeros(4), val_fraction=0.0)


def test_split_bank_is_stratified():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2 + [3] * 1 + [4] * 50)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    tr, va = split_bank(labels, val_fraction=0.2, seed=1)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(labels)))
    assert len(np.intersect1d(tr, va)) == 0
    n_val = {c: int((labels[va] == c).sum()) for c in range(5)}
    n_tr = {c: int((labels[tr] == c).sum()) for c in range(5)}
    assert n_val == {0: 2, 1: 1, 2: 1, 3: 0, 4: 10}
    assert n_tr == {0: 8, 1: 4, 2: 1, 3: 1, 4: 40}
    tr2, va2 = split_bank(labels, val_fraction=0.2, seed=1)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, split_bank(labels, val_fraction=0.2, seed=2)[1])
    # a large fraction still leaves one item of every multi-item class in train
    tr9, _ = split_bank(labels, val_fraction=0.99)
    assert set(labels[tr9]) == {0, 1, 2, 3, 4}


def test_dinov2_linear_features_shapes_and_cls():
    torch.manual_seed(0)
    vit = build_vit("tiny", img_size=16, patch_size=4, embed_dim=64, depth=4, num_heads=2)
    vit.train()
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    feats = dinov2_linear_features(vit, x, n_last_blocks=4, batch_size=2)
    assert vit.training  # flag restored
    assert set(feats) == {"cls", "cls4_avgpool"}
    assert feats["cls"].shape == (5, 64)
    assert feats["cls4_avgpool"].shape == (5, 5 * 64)
    vit.eval()
    with torch.no_grad():
        out = vit.forward_features(normalize(x))
    torch.testing.assert_close(feats["cls"], out["x_norm_clstoken"])
    torch.testing.assert_close(feats["cls4_avgpool"][:, 3 * 64 : 4 * 64], feats["cls"])
    torch.testing.assert_close(
        feats["cls4_avgpool"][:, 4 * 64 :], out["x_norm_patchtokens"].mean(dim=1)
    )
    two = dinov2_linear_features(vit, x, n_last_blocks=2)
    assert two["cls4_avgpool"].shape == (5, 3 * 64)
    assert not vit.training  # eval flag restored too
