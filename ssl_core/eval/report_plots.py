"""Model figures of the evaluation report, drawn from numbers (no model code here).

- :func:`plot_attention_grid`: per model, fixed images x (input, CLS attention averaged over
  heads, each head, PCA of the patch features as RGB).
- :func:`plot_register_twins`: a model with and without registers side by side.
- :func:`plot_norm_histograms`: patch-token norm histograms, one panel per model.
- :func:`plot_accuracy_vs_params` and :func:`plot_knn_vs_k`.

Bare :class:`~matplotlib.figure.Figure` objects (Agg canvas, no pyplot state), written
atomically as PNG (``curation_plots._save``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ssl_core.eval.curation_plots import _save

MAX_HEADS_SHOWN = 6  # per-head columns of the attention grid (the mean is always shown)


def _show(ax, img: np.ndarray, title: str | None = None, cmap: str | None = None) -> None:
    ax.imshow(img, cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _input(img: np.ndarray) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) for imshow."""
    return np.clip(np.transpose(img, (1, 2, 0)), 0.0, 1.0)


def _attn_columns(attn: np.ndarray | None) -> list[tuple[str, int | None]]:
    """(title, head index or None for the mean) of the attention columns."""
    if attn is None:
        return []
    heads = min(attn.shape[1], MAX_HEADS_SHOWN)
    return [("CLS attn (mean)", None), *((f"head {h}", h) for h in range(heads))]


def plot_attention_grid(
    images: np.ndarray, attn: np.ndarray | None, pca: np.ndarray, title: str, path: Path
) -> Path:
    """One row per image: input, CLS attention (head mean, then heads), PCA RGB.

    Args:
        images: (B, 3, S, S) in [0, 1].
        attn: (B, H, G, G) CLS attention of the last block, or None (XCiT: PCA only).
        pca: (B, G, G, 3) in [0, 1] (:func:`~ssl_core.eval.attention_maps.patch_pca_rgb`).
        title: Figure title (the model name and any note).
        path: PNG to write.
    """
    cols = _attn_columns(attn)
    n_cols = 2 + len(cols)
    fig = Figure(figsize=(1.3 * n_cols, 1.3 * len(images) + 0.6))
    axes = fig.subplots(len(images), n_cols, squeeze=False)
    for i, img in enumerate(images):
        first = i == 0
        _show(axes[i][0], _input(img), "input" if first else None)
        for j, (name, head) in enumerate(cols, start=1):
            a = attn[i].mean(axis=0) if head is None else attn[i, head]  # type: ignore[index]
            _show(axes[i][j], a, name if first else None, cmap="inferno")
        _show(axes[i][-1], pca[i], "patch PCA (RGB)" if first else None)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_register_twins(
    images: np.ndarray,
    twins: Mapping[str, tuple[np.ndarray | None, np.ndarray]],
    path: Path,
) -> Path:
    """Side by side, per image: input, then for each model (with / without registers) its
    head-mean CLS attention and its PCA RGB. ``twins`` maps model label -> (attn, pca)."""
    n_cols = 1 + 2 * len(twins)
    fig = Figure(figsize=(1.5 * n_cols, 1.5 * len(images) + 0.6))
    axes = fig.subplots(len(images), n_cols, squeeze=False)
    for i, img in enumerate(images):
        first = i == 0
        _show(axes[i][0], _input(img), "input" if first else None)
        for j, (label, (attn, pca)) in enumerate(twins.items()):
            ax_a, ax_p = axes[i][1 + 2 * j], axes[i][2 + 2 * j]
            if attn is None:
                ax_a.axis("off")
            else:
                _show(ax_a, attn[i].mean(axis=0), f"{label}\nattn" if first else None, "inferno")
            _show(ax_p, pca[i], f"{label}\nPCA" if first else None)
    fig.tight_layout()
    return _save(fig, path)


def plot_norm_histograms(hists: Mapping[str, Mapping], path: Path) -> Path:
    """Patch-token norm histograms (log counts), one panel per model; ``hists`` maps model ->
    ``feature_health`` token stats (``hist`` edges/counts, ``patch_norm_median``)."""
    if not hists:
        raise ValueError("no token-norm histograms to plot")
    n = len(hists)
    fig = Figure(figsize=(3.2 * n, 2.8))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, t) in zip(axes, hists.items(), strict=True):
        edges, counts = np.asarray(t["hist"]["edges"]), np.asarray(t["hist"]["counts"])
        ax.stairs(counts, edges, fill=True, alpha=0.7)
        ax.set_yscale("log")
        thr = 4.0 * float(t["patch_norm_median"])
        ax.axvline(thr, color="red", linestyle="--", linewidth=1, label="4x median")
        share = 100 * float(t.get("outlier_share", 0.0))
        ax.set_title(f"{name}\n{share:.2f} % above 4x median", fontsize=8)
        ax.set_xlabel("patch-token norm (pre-norm)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("tokens (log)", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_vs_params(rows: list[dict], path: Path) -> Path:
    """kNN (k=20) and linear (CLS) top-1 against parameters (M), one labelled point each per
    model; ``rows`` are :func:`~ssl_core.eval.model_metrics.accuracy_vs_params_rows`."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key, marker, label in (("knn_top1", "o", "kNN"), ("linear_cls_top1", "^", "linear CLS")):
        pts = [(r["params_m"], r[key], r["model"]) for r in rows if r.get(key) is not None]
        if not pts:
            continue
        ax.scatter([p for p, _, _ in pts], [100 * a for _, a, _ in pts], marker=marker, label=label)
        for p, a, m in pts:
            ax.annotate(m, (p, 100 * a), fontsize=7, xytext=(4, 3), textcoords="offset points")
    k = rows[0].get("knn_k", 20) if rows else 20
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"Accuracy vs parameters (kNN k={k}, linear on CLS)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_knn_vs_k(knn: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """kNN top-1 (%) against k (log x), one line per model (``metrics["knn"]``)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, accs in knn.items():
        ks = sorted(int(k) for k in accs)
        ax.plot(ks, [100 * accs[str(k)] for k in ks], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("k (neighbours)")
    ax.set_ylabel("kNN top-1 (%)")
    ax.set_title("kNN top-1 vs k", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
