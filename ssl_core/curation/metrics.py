"""Balance metrics of a label / cluster distribution.

All functions take a 1-D array of integer labels (one per sample). ``n_components`` (when
given) fixes the number of possible labels, so labels that never occur count as empty
classes (they lower coverage and entropy and raise the Gini coefficient).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "label_counts",
    "coverage",
    "covered",
    "largest_share",
    "top_share",
    "gini",
    "entropy",
    "max_min_ratio",
    "summary",
]


def label_counts(labels: np.ndarray, n_components: int | None = None) -> np.ndarray:
    """Counts per label 0..n_components-1 (default ``max(labels) + 1``)."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    n = int(labels.max()) + 1 if labels.size else 0
    if n_components is not None:
        if n > n_components:
            raise ValueError(f"label {n - 1} >= n_components={n_components}")
        n = n_components
    return np.bincount(labels, minlength=n)


def covered(labels: np.ndarray, n_components: int) -> int:
    """Number of components with at least one sample."""
    return int(np.count_nonzero(label_counts(labels, n_components)))


def coverage(labels: np.ndarray, n_components: int) -> float:
    """Fraction of the ``n_components`` components with at least one sample."""
    if n_components <= 0:
        raise ValueError("n_components must be positive")
    return covered(labels, n_components) / n_components


def largest_share(labels: np.ndarray) -> float:
    """Share of the samples that carry the most frequent label (0 for no samples)."""
    c = label_counts(labels)
    return float(c.max() / c.sum()) if c.size else 0.0


def top_share(labels: np.ndarray, top: int = 10) -> float:
    """Share of the samples that carry the ``top`` most frequent labels (0 for no samples)."""
    c = np.sort(label_counts(labels))[::-1]
    return float(c[:top].sum() / c.sum()) if c.sum() else 0.0


def gini(labels: np.ndarray, n_components: int | None = None) -> float:
    """Gini coefficient of the counts: 0 = perfectly even, -> 1 = all in one label.

    ``G = sum_i sum_j |c_i - c_j| / (2 n^2 mean(c))``, computed from the sorted counts.
    """
    c = np.sort(label_counts(labels, n_components).astype(np.float64))
    n = c.size
    if n == 0 or c.sum() == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * c) / (n * c.sum()))


def entropy(
    labels: np.ndarray,
    n_components: int | None = None,
    normalised: bool = False,
) -> float:
    """Shannon entropy (nats) of the label distribution.

    ``normalised=True`` divides by ``log(n_components)`` (or log of the number of labels), so
    1 means uniform over all components.
    """
    c = label_counts(labels, n_components).astype(np.float64)
    if c.sum() == 0:
        return 0.0
    p = c[c > 0] / c.sum()
    h = float(-(p * np.log(p)).sum())
    if normalised:
        return h / np.log(c.size) if c.size > 1 else 1.0
    return h


def max_min_ratio(labels: np.ndarray, n_components: int | None = None) -> float:
    """Largest count / smallest count (``inf`` when some component is empty)."""
    c = label_counts(labels, n_components)
    if c.size == 0:
        return float("nan")
    return float("inf") if c.min() == 0 else float(c.max() / c.min())


def summary(labels: np.ndarray, n_components: int) -> dict[str, float]:
    """All metrics in one dict (for reports and data-quality checks)."""
    return {
        "n": int(np.asarray(labels).size),
        "covered": covered(labels, n_components),
        "coverage": coverage(labels, n_components),
        "largest_share": largest_share(labels),
        "top10_share": top_share(labels, 10),
        "gini": gini(labels, n_components),
        "entropy": entropy(labels, n_components),
        "entropy_normalised": entropy(labels, n_components, normalised=True),
        "max_min_ratio": max_min_ratio(labels, n_components),
    }
