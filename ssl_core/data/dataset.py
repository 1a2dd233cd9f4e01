"""A map-style dataset over pool entries that never raises on a bad file.

Decoding errors yield ``None``; :func:`collate_skip_bad` drops them and the caller counts them,
so a file that broke after ingest (or a flaky disk) costs one sample, not the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ssl_core.data.images import decode_gray_or_rgb, read_bytes


class ImageDataset(Dataset):
    def __init__(self, root: str | Path, paths: Sequence[str], size: int, channels: int = 3):
        self.root, self.paths, self.size, self.channels = Path(root), list(paths), size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        try:
            arr = decode_gray_or_rgb(read_bytes(self.root, self.paths[i]), self.size, self.channels)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None
        return torch.from_numpy(np.ascontiguousarray(arr)), i


def collate_skip_bad(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack good samples; returns (images (B,C,H,W), dataset indices (B,), n_bad)."""
    good = [b for b in batch if b is not None]
    n_bad = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), n_bad
    x = torch.stack([g[0] for g in good])
    idx = torch.tensor([g[1] for g in good], dtype=torch.long)
    return x, idx, n_bad


def make_loader(
    ds: ImageDataset, batch_size: int, shuffle: bool = False, seed: int = 0, workers: int = 0
) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=gen,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        drop_last=False,
        persistent_workers=workers > 0,
    )
