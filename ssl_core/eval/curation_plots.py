"""Plots for the curation report: cluster sizes, per-cluster image grids, class balance.

All figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot
global state, safe in threads/headless) and written atomically as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from ssl_core.data.images import decode_gray_or_rgb, read_bytes
from ssl_core.utils.atomic import atomic_path

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, IndexError, Image.DecompressionBombError)


def _save(fig: Figure, path: Path, dpi: int = 100) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def _levels(sizes: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if isinstance(sizes, Mapping):
        return {str(k): np.asarray(v).ravel() for k, v in sizes.items()}
    return {"clusters": np.asarray(sizes).ravel()}


def plot_cluster_sizes(
    sizes_before: np.ndarray | Mapping[str, np.ndarray],
    sizes_after: np.ndarray | Mapping[str, np.ndarray],
    path: Path,
) -> Path:
    """Cluster sizes sorted largest first (log y), before vs after curation.

    Pass one array per side (one level), or a mapping ``{level name: sizes}`` with the same
    keys on both sides (e.g. ``{"bottom (level 0)": ..., "top (level 2)": ...}``): one panel
    per level. Sizes are images per cluster (``np.bincount`` of assignments); empty clusters
    after curation can't be shown on a log axis and are counted in the legend instead.
    """
    before, after = _levels(sizes_before), _levels(sizes_after)
    if before.keys() != after.keys():
        raise ValueError(f"levels differ: before {list(before)} vs after {list(after)}")
    if not before:
        raise ValueError("no cluster sizes to plot")
    fig = Figure(figsize=(5 * len(before), 3.5))
    axes = fig.subplots(1, len(before), squeeze=False)[0]
    for ax, name in zip(axes, before, strict=True):
        for label, sizes, style in (("before", before[name], "-"), ("after", after[name], "--")):
            s = np.sort(sizes[sizes > 0])[::-1]
            empty = int((sizes <= 0).sum())
            text = f"{label}: {len(sizes)} clusters, {int(sizes.sum())} images"
            text += f", {empty} empty" if empty else ""
            marker = "o" if len(s) <= 30 else None
            ax.plot(np.arange(1, len(s) + 1), s, style, marker=marker, ms=3, label=text)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("cluster rank (largest first)")
        ax.set_ylabel("images per cluster")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _thumb(root: Path, rel: str, size: int) -> np.ndarray | None:
    try:
        return decode_gray_or_rgb(read_bytes(root, rel), size, 3).transpose(1, 2, 0)
    except _DECODE_ERRORS:
        return None


def cluster_image_grid(
    pool_root: Path,
    paths_by_cluster: dict[int, list[str]],
    path: Path,
    per_cluster: int = 8,
    max_clusters: int = 12,
    seed: int = 0,
    thumb: int = 48,
) -> int:
    """One row per cluster (the first ``max_clusters`` in dict order), ``per_cluster`` random
    images each; files that can't be read or decoded are skipped and replaced by the next
    sampled path. Returns the number of images drawn (0: a placeholder PNG saying so)."""
    if per_cluster <= 0 or max_clusters <= 0 or thumb <= 0:
        raise ValueError("per_cluster, max_clusters and thumb must be > 0")
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, int, list[np.ndarray]]] = []
    for cid, paths in list(paths_by_cluster.items())[:max_clusters]:
        imgs: list[np.ndarray] = []
        for i in rng.permutation(len(paths)):
            if len(imgs) == per_cluster:
                break
            if (img := _thumb(Path(pool_root), paths[int(i)], thumb)) is not None:
                imgs.append(img)
        rows.append((cid, len(paths), imgs))
    n_drawn = sum(len(r[2]) for r in rows)
    pad = 2
    cell = thumb + pad
    canvas = np.ones((max(len(rows), 1) * cell, per_cluster * cell, 3), dtype=np.float32)
    for r, (_, _, imgs) in enumerate(rows):
        for c, img in enumerate(imgs):
            canvas[r * cell : r * cell + thumb, c * cell : c * cell + thumb] = img
    fig = Figure(figsize=(max(per_cluster * 0.7, 3) + 1.5, max(len(rows), 1) * 0.7 + 0.6))
    ax = fig.subplots()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([r * cell + thumb / 2 for r in range(len(rows))])
    ax.set_yticklabels([f"cluster {cid} (n={n})" for cid, n, _ in rows], fontsize=7)
    if n_drawn == 0:
        ax.text(0.5, 0.5, "no decodable images", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{len(rows)} clusters, up to {per_cluster} random images each", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return n_drawn


def plot_class_distribution(
    dists: Mapping[str, Sequence[int]], path: Path, class_names: Sequence[str] | None = None
) -> Path:
    """Grouped bars of class shares, one group per class and one bar per subset
    (e.g. ``{"raw_pool": counts, "random_subset": counts, "curated": counts}``)."""
    if not dists:
        raise ValueError("no class distributions to plot")
    n = max(len(c) for c in dists.values())
    if class_names is not None and len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for {n} classes")
    fig = Figure(figsize=(max(7, 0.6 * n), 3.5))
    ax = fig.subplots()
    width = 0.8 / len(dists)
    for i, (name, counts) in enumerate(dists.items()):
        c = np.zeros(n)
        c[: len(counts)] = counts
        ax.bar(
            np.arange(n) + (i - (len(dists) - 1) / 2) * width,
            c / max(c.sum(), 1),
            width,
            label=f"{name} (n={int(c.sum())})",
        )
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels(class_names if class_names is not None else [str(i) for i in range(n)])
    ax.set_xlabel("class")
    ax.set_ylabel("share")
    ax.axhline(1 / n, color="grey", lw=0.8, ls=":", label="uniform")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
