"""Synthetic embeddings shaped like real ones, for curation tests and benchmarks.

An isotropic Gaussian mixture in 384-d is adversarial to k-means (all centres are equidistant
and a "hub" cluster swallows the small components). Real embedding pools look more like a
hierarchy: broad concepts (super-clusters) split into fine concepts (sub-clusters), with a
long-tailed (Zipf) number of images per fine concept. This module generates exactly that,
in memory (:func:`hierarchical_mixture`) or streamed into a float16 ``.npy`` file for pools
larger than RAM (:func:`write_hierarchical_mixture`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "zipf_sizes",
    "hierarchical_mixture",
    "write_hierarchical_mixture",
    "unequal_spread_mixture",
]


CHUNK_ROWS = 200_000
"""Rows generated (and written) per chunk: bounds the generators' transient memory."""


def zipf_sizes(n: int, n_components: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Split ``n`` points into ``n_components`` sizes proportional to ``1 / rank**exponent``.

    Every component gets at least one point; sizes sum to ``n``; ranks are shuffled so the
    big components land in random super-clusters.
    """
    if n < n_components:
        raise ValueError(f"need n >= n_components, got n={n}, n_components={n_components}")
    w = 1.0 / np.arange(1, n_components + 1, dtype=np.float64) ** exponent
    w /= w.sum()
    extra = n - n_components
    sizes = 1 + np.floor(w * extra).astype(np.int64)
    rest = n - int(sizes.sum())
    frac = w * extra - np.floor(w * extra)
    sizes[np.argsort(-frac, kind="stable")[:rest]] += 1
    return rng.permutation(sizes)


def hierarchical_mixture(
    n: int = 100_000,
    dim: int = 384,
    n_super: int = 50,
    n_sub: int = 20,
    zipf_exponent: float = 1.0,
    super_scale: float = 1.0,
    sub_scale: float = 0.5,
    noise: float = 0.35,
    normalise: bool = True,
    seed: int = 0,
    chunk: int = CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Hierarchy of ``n_super`` super-clusters x ``n_sub`` sub-clusters with Zipf sizes.

    Scales are norms of the offsets (per-dimension std ``scale / sqrt(dim)``): super-cluster
    centres ~ ``super_scale`` from the origin, sub-cluster centres ~ ``sub_scale`` from their
    super-centre, points ~ ``noise`` from their sub-centre. With the defaults the true
    components are separable but close enough that k-means must work for it.

    Returns:
        ``(x float32 (n, dim), component int64 (n,))`` with component id in
        ``[0, n_super * n_sub)``; ``component // n_sub`` is the super-cluster.
    """
    comp, chunks = _mixture(n, dim, n_super, n_sub, zipf_exponent, super_scale, sub_scale,
                            noise, normalise, seed, chunk)  # fmt: skip
    x = np.empty((n, dim), dtype=np.float32)
    for a, b, xb in chunks:
        x[a:b] = xb
    return x, comp


def write_hierarchical_mixture(
    path: Path | str, labels_path: Path | str, n: int, **mixture: float | int | bool
) -> None:
    """:func:`hierarchical_mixture` streamed to disk: ``x`` as a float16 ``(n, dim)`` ``.npy``
    at ``path`` (written through ``np.lib.format.open_memmap``, ``chunk`` rows at a time) and
    the component ids (int64) as ``.npy`` at ``labels_path``.

    ``mixture``: the other arguments of :func:`hierarchical_mixture` (same defaults). Same
    points: ``np.load(path)`` equals
    ``hierarchical_mixture(...)[0].astype(np.float16)`` exactly (float64 -> float32 ->
    float16, as the in-memory version rounds), and the random draws do not depend on
    ``chunk``. Memory: the component ids (``n`` int64, plus a transient copy while they are
    shuffled) and one chunk, never the array. Both files are written under a temporary name
    and renamed when complete, so an interrupted run leaves no file that looks finished.
    """
    path, labels_path = Path(path), Path(labels_path)
    args = inspect.signature(hierarchical_mixture).bind(n, **mixture)
    args.apply_defaults()
    comp, chunks = _mixture(**args.arguments)
    tmp = path.with_name(path.name + ".tmp.npy")
    x = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.float16, shape=(n, args.arguments["dim"])
    )
    try:
        for a, b, xb in chunks:
            x[a:b] = xb
        x.flush()
    finally:
        del x
    tmp_labels = labels_path.with_name(labels_path.name + ".tmp.npy")
    np.save(tmp_labels, comp)
    os.replace(tmp_labels, labels_path)
    os.replace(tmp, path)


def _mixture(
    n: int,
    dim: int,
    n_super: int,
    n_sub: int,
    zipf_exponent: float,
    super_scale: float,
    sub_scale: float,
    noise: float,
    normalise: bool,
    seed: int,
    chunk: int,
) -> tuple[np.ndarray, Iterator[tuple[int, int, np.ndarray]]]:
    """Component ids ``(n,)`` and a generator of ``(start, stop, rows float32)`` chunks.

    All random draws before the points come first, then one ``(rows, dim)`` normal draw per
    chunk; numpy's ``Generator.standard_normal`` gives the same stream whatever the split,
    so the points do not depend on ``chunk``.
    """
    rng = np.random.default_rng(seed)
    n_comp = n_super * n_sub
    s = 1.0 / np.sqrt(dim)
    sup = rng.standard_normal((n_super, dim)) * (super_scale * s)
    sub = np.repeat(sup, n_sub, axis=0) + rng.standard_normal((n_comp, dim)) * (sub_scale * s)
    sizes = zipf_sizes(n, n_comp, zipf_exponent, rng)
    comp = rng.permutation(np.repeat(np.arange(n_comp, dtype=np.int64), sizes))

    def chunks() -> Iterator[tuple[int, int, np.ndarray]]:
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            xb = sub[comp[a:b]] + rng.standard_normal((b - a, dim)) * (noise * s)
            if normalise:
                xb /= np.linalg.norm(xb, axis=1, keepdims=True)
            yield a, b, xb.astype(np.float32)

    return comp, chunks()


def unequal_spread_mixture(
    n: int = 100_000,
    dim: int = 384,
    spread_ratio: float = 10.0,
    noise: float = 0.35,
    seed: int = 0,
    chunk: int = CHUNK_ROWS,
    **mixture: float,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hierarchical_mixture` (not normalised) whose components have very unequal spreads.

    Component ``c``'s points lie ``noise * r_c`` from its centre, with ``r_c`` log-uniform in
    ``[1 / sqrt(spread_ratio), sqrt(spread_ratio)]`` (so the widest component is
    ``spread_ratio`` times as wide as the tightest) and independent of its size. Plain k-means
    spends centroids on wide components, so this family tests whether curation still covers the
    tight, small ones. Other keyword arguments go to :func:`hierarchical_mixture`.
    """
    centres, comp = hierarchical_mixture(
        n, dim, noise=0.0, normalise=False, seed=seed, chunk=chunk, **mixture
    )
    rng = np.random.default_rng([seed, 1])
    half = np.log(spread_ratio) / 2
    r = np.exp(rng.uniform(-half, half, int(comp.max()) + 1))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        scale = (noise / np.sqrt(dim)) * r[comp[a:b], None]
        centres[a:b] += (rng.standard_normal((b - a, dim)) * scale).astype(np.float32)
    return centres, comp
