import math

import pytest
import torch

from ssl_core.loss.ibot import IBOTPatchLoss, masks_weight_from


def _ce(p, s, tau):
    logits = [float(v) / tau for v in s]
    m = max(logits)
    log_z = m + math.log(sum(math.exp(v - m) for v in logits))
    return -sum(float(p[k]) * (logits[k] - log_z) for k in range(len(logits)))


def _reference(student_full, teacher_full, masks, tau):
    """Per-image loop over masked patches; mean per image, then over all B images."""
    B, N = masks.shape
    total = 0.0
    for b in range(B):
        idx = [n for n in range(N) if masks[b, n]]
        if not idx:
            continue
        total += sum(_ce(teacher_full[b, n], student_full[b, n], tau) for n in idx) / len(idx)
    return total / B


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    B, N, K = 4, 6, 5
    s = torch.randn(B, N, K, generator=g)
    t = torch.softmax(torch.randn(B, N, K, generator=g), -1)
    masks = torch.zeros(B, N, dtype=torch.bool)
    masks[0, [0, 2]] = True
    masks[2, [1, 3, 4, 5]] = True
    masks[3, 5] = True  # image 1 has no mask
    return s, t, masks


def test_matches_per_image_loop():
    s, t, masks = _data()
    out = IBOTPatchLoss(student_temp=0.1)(s[masks], t[masks], masks)
    assert out.item() == pytest.approx(_reference(s, t, masks, 0.1), rel=1e-5)


def test_unmasked_images_contribute_nothing():
    s, t, masks = _data()
    loss = IBOTPatchLoss()
    base = loss(s[masks], t[masks], masks)
    s2, t2 = s.clone(), t.clone()
    s2[1] = torch.randn_like(s2[1]) * 10  # image without mask, and unmasked tokens elsewhere
    s2[0, 1] += 5.0
    assert loss(s2[masks], t2[masks], masks).item() == pytest.approx(base.item(), rel=1e-6)


def test_weights_and_explicit_weights():
    s, t, masks = _data()
    w = masks_weight_from(masks)
    assert w.shape == (int(masks.sum()),)
    assert torch.allclose(w[:2], torch.full((2,), 0.5)) and w[-1] == 1.0
    loss = IBOTPatchLoss()
    assert torch.allclose(
        loss(s[masks], t[masks], masks, masks_weight=w), loss(s[masks], t[masks], masks)
    )
    with pytest.raises(ValueError):
        loss(s[masks][:-1], t[masks][:-1], masks)
