"""Hierarchical k-means with resampling (Vo et al. 2024, "Automatic data curation").

Level 0 clusters the points into ``levels[0]`` clusters; level ``l`` clusters the ``levels[l-1]``
centroids of the level below into ``levels[l]`` clusters. At each level, after the initial
k-means, the *resampling* refinement runs ``R`` times: take, from every cluster, the
``sample_size`` members closest to its centroid (``sample_size`` ~ half the mean cluster size),
run k-means on the union of these (so every cluster contributes about equally, which moves
centroids off the dense modes) and reassign all of the level's points to the new centroids.

Differences to the reference (facebookresearch/ssl-data-curation), chosen for speed:
Lloyd iterations on at most ``k * max_points_per_centroid`` points (at most ``n_iter``,
default 25, vs 50; stopped early once an iteration improves the objective by less than
``tol``; an empty cluster takes half of a big one, as faiss does) seeded with batched greedy
k-means++ on a subsample; resampling rounds seed their k-means with k-means++ on the resampled
points (as the reference does) unless ``resample_init="warm"`` (start from the current
centroids). The distance products are torch fp32 GEMMs (:mod:`ssl_core.curation.nearest`).

Finished levels are checkpointed (``.npy``, atomic write) under ``checkpoint_dir`` keyed by a
hash of the data and of the configuration of that level and the ones below it, so a re-run
with the same inputs resumes, and a run that only changes upper levels reuses lower ones. A
level's three files are followed by a record of their sizes and sha256
(``level<l>_<hash>.record.json``); a level is resumed only when its files match the record,
otherwise (a crash before the record, a truncated or altered file) it is logged, deleted and
computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ssl_core.curation.kmeans import assign, fit_centroids, kmeans_with_distances, l2_normalised
from ssl_core.utils.atomic import umask_mode
from ssl_core.utils.failpoints import failpoint
from ssl_core.utils.hashing import record_files, verify_record

__all__ = ["HKMeansResult", "hierarchical_kmeans", "point_cluster_ids", "closest_per_cluster"]

log = logging.getLogger(__name__)


@dataclass
class HKMeansResult:
    """Per-level output of :func:`hierarchical_kmeans`.

    Attributes:
        levels: clusters per level.
        centroids: ``centroids[l]`` is ``(levels[l], D)``.
        assignments: ``assignments[0]`` is ``(N,)`` (point -> level-0 cluster);
            ``assignments[l]`` is ``(levels[l-1],)`` (level-(l-1) cluster -> level-l cluster).
        distances: ``distances[l]`` squared L2 distance of each level-l item to its centroid.
        config_hash: hash of the data and the whole configuration.
        resumed_levels: levels loaded from checkpoints instead of computed.
    """

    levels: tuple[int, ...]
    centroids: list[np.ndarray]
    assignments: list[np.ndarray]
    distances: list[np.ndarray]
    config_hash: str = ""
    resumed_levels: list[int] = field(default_factory=list)

    @property
    def n_points(self) -> int:
        return int(self.assignments[0].shape[0])

    def point_cluster_ids(self) -> np.ndarray:
        """``(N, L)``: for each point, its cluster id at every level."""
        return point_cluster_ids(self.assignments)


def point_cluster_ids(assignments: Sequence[np.ndarray]) -> np.ndarray:
    """Compose per-level assignments: ``out[i, l]`` = level-l cluster of point ``i``."""
    cur = np.asarray(assignments[0], dtype=np.int64)
    out = np.empty((cur.shape[0], len(assignments)), dtype=np.int64)
    out[:, 0] = cur
    for lvl in range(1, len(assignments)):
        cur = np.asarray(assignments[lvl], dtype=np.int64)[cur]
        out[:, lvl] = cur
    return out


def closest_per_cluster(labels: np.ndarray, dist: np.ndarray, per_cluster: int) -> np.ndarray:
    """Indices of the ``per_cluster`` members closest to their centroid in every cluster."""
    order = np.lexsort((dist, labels))  # by cluster, then distance
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    rank = np.arange(len(lab)) - np.repeat(starts, np.diff(np.r_[starts, len(lab)]))
    return np.sort(order[rank < per_cluster])


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _data_hash(x: np.ndarray, chunk_bytes: int = 1 << 26) -> str:
    """blake2b of shape, dtype and the C-order bytes of ``x``, fed in row chunks of about
    ``chunk_bytes`` (same digest as one update, so existing checkpoints keep their keys; a
    memmap is read piecewise, never copied whole)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str((x.shape, str(x.dtype))).encode())
    if x.ndim == 0 or x.nbytes <= chunk_bytes:
        h.update(memoryview(np.ascontiguousarray(x)).cast("B"))
        return h.hexdigest()
    step = max(1, chunk_bytes // max(1, x.nbytes // len(x)))
    for a in range(0, len(x), step):
        h.update(memoryview(np.ascontiguousarray(x[a : a + step])).cast("B"))
    return h.hexdigest()


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.chmod(tmp, umask_mode())  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_ARRAYS = ("centroids", "assignments", "distances")


def _load_level(ckpt: Path, stem: str) -> tuple[np.ndarray, ...] | None:
    """A checkpointed level's arrays when its files match their size+hash record; else None,
    after deleting whatever of the level is there (logged when some of it was)."""
    files = [ckpt / f"{stem}_{a}.npy" for a in _ARRAYS]
    record = ckpt / f"{stem}.record.json"
    if not any(f.exists() for f in [*files, record]):
        return None
    problem = verify_record(record)
    if problem is None:
        try:
            return tuple(np.load(f) for f in files)
        except (OSError, ValueError) as e:
            problem = f"unreadable: {e}"
    log.warning("hkmeans checkpoint %s/%s: %s; computing the level again", ckpt, stem, problem)
    for f in [*files, record]:
        f.unlink(missing_ok=True)
    return None


def _save_level(ckpt: Path, stem: str, arrays: tuple[np.ndarray, ...]) -> None:
    """The level's arrays, then their size+hash record (last: the level is complete)."""
    files = [ckpt / f"{stem}_{a}.npy" for a in _ARRAYS]
    for f, arr in zip(files, arrays, strict=True):
        _atomic_save(f, arr)
    record_files(ckpt / f"{stem}.record.json", files)
    failpoint("kmeans.level_saved")


def _per_level(v: int | float | Sequence, n_levels: int, name: str) -> list:
    if isinstance(v, int | float):
        return [v] * n_levels
    v = list(v)
    if len(v) != n_levels:
        raise ValueError(f"{name} needs {n_levels} values (one per level), got {len(v)}")
    return v


def _cluster_level(
    x: np.ndarray,
    k: int,
    n_resampling: int,
    sample_ratio: float,
    seed: int,
    resample_init: str,
    km: dict,
    resample_ppc: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One level: k-means, then ``n_resampling`` rounds; ``km`` = kmeans_with_distances options.

    With ``resample_ppc`` > 0 and more than ``k * resample_ppc`` points, the rounds work on that
    many random points of the level (their closest members, their reassignment) and every point
    is assigned once, after the last round.
    """
    ss = np.random.SeedSequence(seed)
    seeds = [int(s.generate_state(1)[0]) for s in ss.spawn(n_resampling + 2)]
    c, lab, dist = kmeans_with_distances(x, k, seed=seeds[0], **km)
    failpoint("kmeans.in_level")
    xa = l2_normalised(x) if km["spherical"] else x
    xr = xa
    if n_resampling and resample_ppc > 0 and k * resample_ppc < len(x):
        rng = np.random.default_rng(seeds[-1])
        sub = np.sort(rng.choice(len(x), size=k * resample_ppc, replace=False))
        xr, lab, dist = xa[sub], lab[sub], dist[sub]
    sample_size = max(1, round(sample_ratio * len(xr) / k))
    if sample_size > 1:
        for r in range(n_resampling):
            sel = closest_per_cluster(lab, dist, sample_size)
            if len(sel) < k:
                break
            warm = c if resample_init == "warm" else None
            c = fit_centroids(xr[sel], k, seed=seeds[r + 1], init_centroids=warm, **km)
            lab, dist = assign(xr, c)
    if xr is not xa:  # the rounds saw a subsample: assign every point once
        lab, dist = assign(xa, c)
    return c, lab, dist


def hierarchical_kmeans(
    x: np.ndarray,
    levels: Sequence[int],
    n_iter: int = 25,
    n_resampling_steps: int | Sequence[int] = 10,
    sample_size_ratio: float | Sequence[float] = 0.5,
    seed: int = 0,
    checkpoint_dir: Path | str | None = None,
    progress: bool = False,
    init: Literal["kmeans++", "random"] = "kmeans++",
    resample_init: Literal["kmeans++", "warm"] = "kmeans++",
    spherical: bool = False,
    kpp_sample: int | None = None,
    max_points_per_centroid: int = 128,
    tol: float = 1e-4,
    kpp_trials: int | None = None,
    resample_points_per_centroid: int = 0,
) -> HKMeansResult:
    """Hierarchical k-means with resampling.

    Args:
        x: (N, D) embeddings.
        levels: clusters per level, bottom up, e.g. ``(2000, 200, 50)``; must be non-increasing
            and ``levels[0] <= N``.
        n_iter: Lloyd iterations per k-means run.
        n_resampling_steps: resampling rounds R (one value, or one per level; 0 disables).
        sample_size_ratio: points taken per cluster in a resampling round, as a fraction of the
            mean cluster size of that level (``max(1, round(ratio * n_l / k_l))``); the
            reference uses ~0.5. A resulting size of 1 disables resampling (as upstream).
        seed: master seed; every level and round derives its own seed from it.
        checkpoint_dir: if given, each finished level is saved there and reused when the data
            and the configuration up to that level match.
        progress: log one line per level at INFO level.
        init: seeding of every k-means run.
        resample_init: ``"kmeans++"`` = fresh k-means per round (reference); ``"warm"`` =
            start from the current centroids (faster, slightly less balancing).
        spherical: cosine k-means.
        kpp_sample: subsample size for k-means++ seeding (see :func:`kmeans`).
        max_points_per_centroid: Lloyd iterations train on at most ``k *`` this many random
            points of a level (all points are assigned at the end); bounds level-0 cost.
        tol: Lloyd early stop: relative objective decrease per iteration below which a k-means
            run stops before ``n_iter`` (``0``: always ``n_iter``; see :func:`kmeans`).
        kpp_trials: candidates per k-means++ centre (default ``2 + ln k``: greedy k-means++,
            as upstream; 1: plain k-means++), see :func:`ssl_core.curation.kmeans.kmeans_plus_plus`.
        resample_points_per_centroid: ``0`` (default): every resampling round reassigns all of
            a level's points, as the reference does; ``m`` > 0: the rounds of a level with more
            than ``k * m`` points work on ``k * m`` random ones and all points are assigned
            once at the end (a round then costs ~``k * m`` instead of ``N`` rows: the knob for
            pools of 1e7 and more; its balance is measured in benchmarks/results/curation.md).
    """
    if not (isinstance(x, np.ndarray) and x.dtype in (np.float16, np.float32)):
        x = np.ascontiguousarray(x, dtype=np.float32)  # float16/32 arrays, memmaps: read as is
    levels = tuple(int(k) for k in levels)
    if not levels:
        raise ValueError("levels must be non-empty")
    if levels[0] > len(x) or any(b > a for a, b in zip(levels, levels[1:], strict=False)):
        raise ValueError(f"levels must be non-increasing and <= N={len(x)}, got {levels}")
    n_lv = len(levels)
    steps = [int(s) for s in _per_level(n_resampling_steps, n_lv, "n_resampling_steps")]
    ratios = [float(r) for r in _per_level(sample_size_ratio, n_lv, "sample_size_ratio")]
    common = {"data": _data_hash(x), "n_iter": n_iter, "seed": seed, "init": init,
              "resample_init": resample_init, "spherical": spherical, "kpp_sample": kpp_sample,
              "max_ppc": max_points_per_centroid, "tol": tol, "kpp_trials": kpp_trials,
              "resample_ppc": resample_points_per_centroid, "v": 2}  # fmt: skip
    km = {"n_iter": n_iter, "init": init, "spherical": spherical, "kpp_sample": kpp_sample,
          "kpp_trials": kpp_trials, "max_points_per_centroid": max_points_per_centroid,
          "tol": tol}  # fmt: skip
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
    res = HKMeansResult(levels, [], [], [], _hash([common, levels, steps, ratios]))
    cur = x
    for lvl, k in enumerate(levels):
        h = _hash([common, levels[: lvl + 1], steps[: lvl + 1], ratios[: lvl + 1]])
        stem = f"level{lvl}_{h}"
        loaded = _load_level(ckpt, stem) if ckpt is not None else None
        if loaded is not None:
            c, lab, dist = loaded
            res.resumed_levels.append(lvl)
            if progress:
                log.info("hkmeans level %d (k=%d): resumed from %s", lvl, k, ckpt)
        else:
            n = len(cur)
            lvl_seed = int(np.random.SeedSequence([seed, lvl]).generate_state(1)[0])
            c, lab, dist = _cluster_level(
                cur, k, steps[lvl], ratios[lvl], lvl_seed, resample_init, km,
                resample_points_per_centroid,
            )  # fmt: skip
            if ckpt is not None:
                _save_level(ckpt, stem, (c, lab, dist))
            if progress:
                log.info("hkmeans level %d: %d -> %d clusters, R=%d, empty=%d",
                         lvl, n, k, steps[lvl], k - len(np.unique(lab)))  # fmt: skip
        res.centroids.append(c)
        res.assignments.append(lab.astype(np.int64))
        res.distances.append(dist)
        cur = c
    return res
