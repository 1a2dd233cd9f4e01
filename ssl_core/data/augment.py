"""Batched multi-crop augmentation (Caron et al. 2020 "SwAV" §3.2 multi-crop; DINO, Caron et al. 2021,
App. "Data augmentation"; DINOv2, Oquab et al. 2023, official ``DataAugmentationDINO``).

Per crop: RandomResizedCrop -> horizontal flip -> colour jitter (p 0.8: 0.4/0.4/0.2/0.1) -> grayscale
(p 0.2) -> Gaussian blur (p 1.0 on global 1, 0.1 on global 2, 0.5 on locals) -> solarize (p 0.2,
global 2 only) -> normalise. Each crop is sampled independently per image; everything runs batched
on the device the input lives on (kornia ops).

Reproducibility: kornia draws its parameters from torch's *global* CPU RNG (its samplers run on
the CPU by default). ``MultiCropAugmentation.__call__`` therefore draws one seed from the given
``torch.Generator`` (or takes ``seed``), and runs inside ``torch.random.fork_rng`` with the CPU
(and the input's CUDA device) RNG seeded from it: results are deterministic and the caller's
global RNG state is left untouched. With neither generator nor seed, the global RNG is used.
This class is deliberately not an ``nn.Module``: moving kornia modules with ``.to(device)`` would
move their samplers and change the random stream across devices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import kornia.augmentation as KA
import torch
from torch import nn

from ssl_core.data.color import ColorJitter
from ssl_core.data.normalize import normalize

__all__ = ["IdenticalViews", "MultiCropAugmentation", "MultiCropConfig"]

_REF_SIZE = 224  # DINOv2 global crop size that the defaults below refer to


@dataclass
class MultiCropConfig:
    """Multi-crop recipe; defaults are DINOv2's for 224 px globals / 96 px locals."""

    global_size: int = 224
    local_size: int = 96
    n_global: int = 2
    n_local: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    interpolation: str = "bicubic"
    flip_prob: float = 0.5
    jitter_brightness: float = 0.4
    jitter_contrast: float = 0.4
    jitter_saturation: float = 0.2
    jitter_hue: float = 0.1
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: tuple[float, float, float] = (1.0, 0.1, 0.5)  # (global 1, global 2, locals)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels, at 224 px
    blur_kernel: int = 9  # pixels, at 224 px
    solarize_prob: float = 0.2  # second global crop only
    solarize_threshold: float = 0.5  # = 128/255 on uint8
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    to_rgb: bool = True  # repeat 1-channel input to 3 channels

    @classmethod
    def scaled_for(cls, image_size: int, patch_size: int, **overrides: object) -> MultiCropConfig:
        """Recipe for ``image_size`` px images, keeping DINOv2's ratios (s = image_size / 224).

        Crop sizes are ``ceil(224 s / p) p`` and ``ceil(96 s / p) p`` (for p = 14 at 224 px this gives
        DINOv2's 224 / 98; for 32 px images, p = 4: 32 / 16); blur kernel and sigma scale with s
        (kernel odd, >= 3). ``overrides`` replace any field afterwards.
        """
        s = image_size / _REF_SIZE
        base = cls()

        def to_patch(px: float) -> int:
            return max(1, math.ceil(round(px / patch_size, 6))) * patch_size

        k = max(3, int(round(base.blur_kernel * s)))
        cfg = dataclasses.replace(
            base,
            global_size=to_patch(base.global_size * s),
            local_size=to_patch(base.local_size * s),
            blur_kernel=k if k % 2 == 1 else k + 1,
            blur_sigma=(base.blur_sigma[0] * s, base.blur_sigma[1] * s),
        )
        return dataclasses.replace(cfg, **overrides)  # type: ignore[arg-type]

    @classmethod
    def for_recipe(cls, recipe: Any, image_size: int, patch_size: int) -> MultiCropConfig:
        """:meth:`scaled_for` with a training config's crops (``n_local_crops``,
        ``global_crops_scale``, ``local_crops_scale``) and its ``augment`` overrides (YAML lists
        become tuples)."""
        extra = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.augment.items()}
        return cls.scaled_for(
            image_size,
            patch_size,
            n_local=recipe.n_local_crops,
            global_scale=tuple(recipe.global_crops_scale),
            local_scale=tuple(recipe.local_crops_scale),
            **extra,
        )


class MultiCropAugmentation:
    """Callable: float images (B, C, H, W) in [0, 1] -> ``{"global": [...], "local": [...]}``.

    ``global``: ``n_global`` tensors (B, C', g, g); ``local``: ``n_local`` tensors (B, C', l, l);
    ``C' = 3`` when ``to_rgb`` and C == 1, else C. Output dtype/device = input's.
    """

    def __init__(self, cfg: MultiCropConfig, patch_size: int) -> None:
        for name in ("global_size", "local_size"):
            if getattr(cfg, name) % patch_size:
                raise ValueError(f"{name}={getattr(cfg, name)} is not a multiple of {patch_size}")
        self.cfg = cfg
        self.patch_size = patch_size
        self._pipes: dict[tuple[str, int], nn.Sequential] = {}  # keyed by (crop kind, channels)

    def _pipeline(self, kind: str, channels: int) -> nn.Sequential:
        key = (kind, channels)
        if key in self._pipes:
            return self._pipes[key]
        c = self.cfg
        size, scale = (
            (c.local_size, c.local_scale) if kind == "local" else (c.global_size, c.global_scale)
        )
        blur_p = {"global0": c.blur_prob[0], "global1": c.blur_prob[1], "local": c.blur_prob[2]}[
            kind
        ]
        colour = channels == 3  # saturation / hue / grayscale only make sense for RGB
        ops: list[nn.Module] = [
            KA.RandomResizedCrop((size, size), scale=scale, resample=c.interpolation),
            KA.RandomHorizontalFlip(p=c.flip_prob),
            ColorJitter(  # kornia's, with a faster hue step (ssl_core.data.color)
                c.jitter_brightness,
                c.jitter_contrast,
                c.jitter_saturation if colour else 0.0,
                c.jitter_hue if colour else 0.0,
                p=c.jitter_prob,
            ),
        ]
        if colour:
            ops.append(KA.RandomGrayscale(p=c.grayscale_prob))
        k = c.blur_kernel
        ops.append(KA.RandomGaussianBlur((k, k), c.blur_sigma, p=blur_p))
        if kind == "global1":
            t = c.solarize_threshold
            ops.append(
                KA.RandomSolarize(thresholds=(t, t), additions=(0.0, 0.0), p=c.solarize_prob)
            )
        self._pipes[key] = pipe = nn.Sequential(*ops)
        return pipe

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.cfg.mean, dtype=x.dtype, device=x.device)
        std = torch.as_tensor(self.cfg.std, dtype=x.dtype, device=x.device)
        if x.shape[1] == 1 and mean.numel() > 1:  # grey kept as 1 channel: average the stats
            mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def _run(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        c = self.cfg
        ch = x.shape[1]
        out: dict[str, list[torch.Tensor]] = {"global": [], "local": []}
        for i in range(c.n_global):
            kind = "global1" if i == 1 else "global0"  # solarize only on the 2nd global crop
            y = self._pipeline(kind, ch)(x).clamp_(0.0, 1.0)
            out["global"].append(self._normalise(y))
        for _ in range(c.n_local):
            y = self._pipeline("local", ch)(x).clamp_(0.0, 1.0)
            out["local"].append(self._normalise(y))
        return out

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> dict[str, list[torch.Tensor]]:
        """Augment a batch. Deterministic given ``generator`` (one seed drawn from it) or ``seed``."""
        if images.ndim != 4:
            raise ValueError(f"expected (B, C, H, W), got {tuple(images.shape)}")
        x = images.float() if not images.is_floating_point() else images
        if x.shape[1] == 1 and self.cfg.to_rgb:
            x = x.expand(-1, 3, -1, -1)
        if generator is not None and seed is None:
            seed = int(torch.randint(0, 2**62, (), generator=generator))
        if seed is None:
            return self._run(x)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.random.default_generator.manual_seed(seed)
            if devices:
                with torch.cuda.device(x.device):
                    torch.cuda.manual_seed(seed)
            return self._run(x)


class IdenticalViews:
    """Diagnostic stand-in for :class:`MultiCropAugmentation`: ``n_global`` identical,
    un-augmented (only normalised) global views and no local crops.

    With it the student sees exactly what the teacher scored, so a working DINO loop must
    sharpen its targets (loss well below log K); see ``benchmarks/dino_identical_views.py``.
    """

    def __init__(self, patch_size: int, n_global: int = 2) -> None:
        self.patch_size, self.n_global = patch_size, n_global

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, list[torch.Tensor]]:
        v = normalize(images.float())
        return {"global": [v] * self.n_global, "local": []}
