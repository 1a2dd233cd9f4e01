"""Typed, validated parameters loaded from ``params.yaml`` (the single source of parameters).

Every section is a pydantic model with ``extra="forbid"``: an unknown or ill-typed key fails with
:class:`ConfigError` naming the key and the file. DVC reads the same file (``params:`` in
``dvc.yaml``) and Dagster loads it through :func:`load_params`, so the three entry points can't
disagree about a value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Section):
    """Where each stage reads and writes, relative to the project root (or absolute)."""

    pool: str = "data/raw"
    eval_dir: str = "data/eval"
    manifest_dir: str = "data/manifest"
    embeddings_dir: str = "data/embeddings"
    dedup_dir: str = "data/dedup"
    clusters_dir: str = "data/clusters"
    curated_dir: str = "data/curated"
    teacher_dir: str = "data/teacher"
    students_dir: str = "data/students"
    reports_dir: str = "data/reports"
    checks_dir: str = "data/checks"


class DemoConfig(_Section):
    """How ``sslops import-demo`` turns Fashion-MNIST into an uncurated, long-tailed raw pool."""

    source_dir: str = "/usr/share/datasets/fashion-mnist"
    max_per_class: int = Field(3000, gt=0, description="images of the most frequent class")
    imbalance_ratio: float = Field(100.0, ge=1.0, description="largest / smallest class size")
    exact_duplicates: int = Field(200, ge=0, description="byte-identical copies planted")
    near_duplicates: int = Field(200, ge=0, description="shifted/brightened re-encoded copies")
    broken_files: int = Field(6, ge=0, description="truncated, empty and non-image files")
    eval_bank_per_class: int = Field(500, gt=0, description="labelled kNN bank, from train")
    eval_query_per_class: int = Field(200, gt=0, description="kNN queries, from the test set")
    seed: int = 0


class IngestConfig(_Section):
    max_quarantine_rate: float = Field(0.05, ge=0.0, le=1.0)
    min_side: int = Field(8, gt=0)
    max_side: int = Field(16384, gt=0)
    max_bytes: int = Field(64 * 1024 * 1024, gt=0)
    extensions: list[str] = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"]


class EmbedConfig(_Section):
    """Embedding model used for curation: raw ``pixels``, a seeded random-init ``bootstrap``
    ViT, or a path to a checkpoint (own or official DINOv2 layout, safetensors)."""

    model: str = "pixels"
    image_size: int = Field(32, gt=0)
    batch_size: int = Field(256, gt=0)
    seed: int = 0


class DedupConfig(_Section):
    near_dup_threshold: float = Field(0.97, gt=0.0, le=1.0)
    decontam_threshold: float = Field(0.97, gt=0.0, le=1.0)
    k: int = Field(8, gt=1)
    min_kept_fraction: float = Field(0.5, ge=0.0, le=1.0)


class ClusterConfig(_Section):
    levels: list[int] = Field(default=[64], min_length=1)
    n_iter: int = Field(25, gt=0)
    n_resampling_steps: int = Field(0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _decreasing(self) -> ClusterConfig:
        if any(b >= a for a, b in zip(self.levels, self.levels[1:], strict=False)):
            raise ValueError(f"levels must be strictly decreasing, got {self.levels}")
        return self


class CurateConfig(_Section):
    target_size: int = Field(3000, gt=0)
    strategy: Literal["random", "closest"] = "random"
    min_cluster_entropy: float = Field(0.8, ge=0.0, le=1.0, description="normalised, 0..1")
    seed: int = 0


class TrainConfig(_Section):
    """Teacher pretraining (DINO + KoLeo, EMA teacher)."""

    preset: str = "tiny"
    image_size: int = Field(32, gt=0)
    epochs: int = Field(3, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.04, ge=0)
    out_dim: int = Field(1024, gt=0, description="DINO prototypes")
    head_hidden_dim: int = Field(512, gt=0)
    head_bottleneck_dim: int = Field(128, gt=0)
    n_local_crops: int = Field(4, ge=0)
    student_temp: float = Field(0.1, gt=0)
    teacher_temp: float = Field(0.04, gt=0)
    momentum_teacher: float = Field(0.992, gt=0, lt=1)
    koleo_weight: float = Field(0.1, ge=0)
    grad_clip: float = Field(3.0, gt=0)
    num_register_tokens: int = Field(4, ge=0)
    max_steps: int | None = Field(None, gt=0, description="cap on optimisation steps")
    seed: int = 0


class DistillConfig(_Section):
    students: list[str] = Field(default=["tiny_student"], min_length=1)
    epochs: int = Field(2, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(5e-4, gt=0)
    max_steps: int | None = Field(None, gt=0)
    seed: int = 0


class EvalConfig(_Section):
    ks: list[int] = Field(default=[10, 20], min_length=1)
    temperature: float = Field(0.07, gt=0)
    batch_size: int = Field(256, gt=0)


class Params(_Section):
    seed: int = 0
    paths: PathsConfig = PathsConfig()
    demo: DemoConfig = DemoConfig()
    ingest: IngestConfig = IngestConfig()
    embed: EmbedConfig = EmbedConfig()
    dedup: DedupConfig = DedupConfig()
    cluster: ClusterConfig = ClusterConfig()
    curate: CurateConfig = CurateConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    eval: EvalConfig = EvalConfig()


class ConfigError(ValueError):
    """A params file that can't be used; the message names the file and the key."""


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate ``params.yaml``. Missing sections take their defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the project root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"  {key}: unknown key")
            else:
                problems.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{path}: invalid parameters:\n" + "\n".join(problems)) from None


def section_dict(params: Params, *sections: str) -> dict:
    """The named sections as plain dicts (what a stage's params hash covers)."""
    return {s: getattr(params, s).model_dump(mode="json") if s != "seed" else params.seed for s in sections}
