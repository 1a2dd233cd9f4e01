"""Typed, validated parameters loaded from ``params.yaml`` (the single source of parameters).

Every section is a pydantic model with ``extra="forbid"``: an unknown or ill-typed key fails with
:class:`ConfigError` naming the key and the file. DVC reads the same file (``params:`` in
``dvc.yaml``) and Dagster loads it through :func:`load_params`, so the three entry points can't
disagree about a value.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ssl_core.launch.settings import LaunchConfig
from ssl_core.orchestration_settings import OrchestrationConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldProblem(ValueError):
    """Raised by a cross-field validator to name the field at fault (``key``, relative to its
    section), the value given and the reason; :func:`load_params` prints ``section.key``."""

    def __init__(self, key: str, value: Any, reason: str) -> None:
        super().__init__(f"{key} {reason}, got {value!r}")
        self.key, self.value, self.reason = key, value, reason


DEMO_POOL = "data/demo/pool"
DEMO_LABELS = "data/demo/eval"
NO_LABELS_DIR = "data/labels"
Auto = Literal["auto"]


class PathsConfig(_Section):
    """Where each stage reads and writes, relative to the project root (or absolute).

    ``pool`` and ``labels`` are inputs: no stage ever writes, moves or deletes anything in
    them (checked by :func:`check_paths`). Every other path is a stage output.
    """

    pool: str = DEMO_POOL
    labels: str = DEMO_LABELS
    manifest_dir: str = "data/manifest"
    embeddings_dir: str = "data/embeddings"
    dedup_dir: str = "data/dedup"
    clusters_dir: str = "data/clusters"
    curated_dir: str = "data/curated"
    teacher_dir: str = "data/teacher"
    students_dir: str = "data/students"
    reports_dir: str = "data/reports"
    checks_dir: str = "data/checks"


class DataConfig(_Section):
    """Where the images come from, and how labels (optional) become an eval set."""

    source: Literal["demo", "folder", "parquet"] = Field(
        "demo",
        description="demo: `sslops raw_pool` builds data/demo from Fashion-MNIST; folder / "
        "parquet: paths.pool is your images (a folder, or a parquet with an `image` column), "
        "read-only to every stage",
    )
    labels: Literal["auto", "none", "folders"] = Field(
        "auto",
        description="auto: a labels file or eval folder at paths.labels, else a `label` column of "
        "a parquet pool, else a folder-per-class pool; folders: require folder-per-class; none: "
        "run without labels (no kNN/decontamination; label-free report)",
    )
    eval_fraction: float = Field(
        0.2, gt=0, le=1, description="share of each class's labelled images held out for eval"
    )
    eval_max_per_class: int = Field(500, gt=1, description="cap on held-out images per class")
    query_fraction: float = Field(
        0.5, gt=0, lt=1, description="share of the held-out images used as kNN queries"
    )
    partial_labels: bool = Field(
        False,
        description="a labels file may leave pool images out (they train, unlabelled); false: "
        "a pool image without a row is an error, caught before ingest decodes anything",
    )
    seed: int = 0


class DemoConfig(_Section):
    """How ``sslops raw_pool`` turns Fashion-MNIST into an uncurated, long-tailed raw pool."""

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
    """What ingest accepts (``ssl_core.data.images``: one decode path for every stage)."""

    max_quarantine_rate: float = Field(0.05, ge=0.0, le=1.0)
    min_side: int = Field(8, gt=0)
    max_side: int = Field(
        16384, gt=0, description="longer side, px; checked on the header, before decoding"
    )
    max_pixels: int = Field(
        100_000_000,
        gt=0,
        le=16384 * 16384,
        description="width x height cap, checked on the header before decoding (bounds the "
        "memory of one decode; decompression bombs never decode)",
    )
    max_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="file size cap; larger files are not even read"
    )
    extensions: list[str] = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"]


class EmbedConfig(_Section):
    """Embedding model used for curation: raw ``pixels``, a seeded random-init ``bootstrap``
    ViT, or a path to a checkpoint (own or official DINOv2 layout, safetensors)."""

    model: str = "pixels"
    image_size: int = Field(28, gt=0, description="decode size, px (the demo's native 28)")
    batch_size: int = Field(256, gt=0)
    seed: int = 0
    shard_size: int = Field(
        4096, gt=0, description="images per embedding-cache shard (a crash loses at most one)"
    )


class DedupConfig(_Section):
    near_dup_threshold: float = Field(
        0.995,
        gt=0.0,
        le=1.0,
        description="cosine at or above which two images are near duplicates (0.995 on "
        "mean-centred pixels, measured in docs/curation.md; another embed.model needs its own)",
    )
    decontam_threshold: float = Field(
        0.995,
        gt=0.0,
        le=1.0,
        description="cosine to the nearest eval image at or above which a pool image is "
        "dropped (decontamination; measured as near_dup_threshold)",
    )
    k: int = Field(8, gt=1)
    min_kept_fraction: float = Field(0.5, ge=0.0, le=1.0)


# Photometric fields of ssl_core.data.augment.MultiCropConfig that `train.augment` may override
# (a test keeps this list in step with the dataclass; not imported to keep this module light).
AUGMENT_KEYS = (
    "flip_prob",
    "jitter_brightness",
    "jitter_contrast",
    "jitter_saturation",
    "jitter_hue",
    "jitter_prob",
    "grayscale_prob",
    "blur_prob",
    "blur_sigma",
    "blur_kernel",
    "solarize_prob",
    "solarize_threshold",
)


class ClusterConfig(_Section):
    levels: list[int] | Auto = Field(
        "auto", description="clusters per level, or auto (ssl_core.sizing.auto_levels)"
    )
    n_iter: int = Field(25, gt=0)
    n_resampling_steps: int = Field(
        10, ge=0, description="resampling rounds per level (ssl_core.curation.hkmeans; 0: none)"
    )
    resample_points_per_centroid: int = Field(
        0,
        ge=0,
        description="0: every resampling round reassigns all points of a level (as upstream); "
        "m > 0: rounds work on k * m random points, all points assigned once at the end "
        "(faster on large pools, see benchmarks/results/curation.md)",
    )
    max_points_per_centroid: int = Field(
        128,
        ge=1,
        description="Lloyd iterations train on at most k * this many random points (every point "
        "is still assigned); lower is faster, see benchmarks/results/curation.md",
    )
    tol: float = Field(
        1e-4,
        ge=0.0,
        description="Lloyd early stop: an iteration that lowers the k-means objective by less "
        "than this fraction ends the run before n_iter (0: always n_iter)",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _decreasing(self) -> ClusterConfig:
        if self.levels == "auto":
            return self
        if not self.levels:
            raise FieldProblem("levels", self.levels, "must name at least one level (or be auto)")
        if any(b >= a for a, b in zip(self.levels, self.levels[1:], strict=False)):
            raise FieldProblem("levels", self.levels, "must be strictly decreasing")
        return self


class CurateConfig(_Section):
    target_size: int | Auto = Field(
        "auto", description="curated images, or auto (ssl_core.sizing.auto_target_size)"
    )

    @model_validator(mode="after")
    def _positive(self) -> CurateConfig:
        if self.target_size != "auto" and self.target_size <= 0:
            raise FieldProblem("target_size", self.target_size, "must be > 0 or auto")
        return self

    strategy: Literal["random", "closest"] = "random"
    min_cluster_entropy: float = Field(
        0.65,
        ge=0.0,
        le=1.0,
        description="gate on the normalised (0..1) top-level cluster entropy after curation; "
        "measured 0.705-0.76 on the demo (docs/curation.md)",
    )
    seed: int = 0


class _RecipeConfig(_Section):
    """Fields shared by teacher pretraining and distillation (the same losses and schedules).

    Epoch-based quantities (warm-ups, last-layer freeze) are converted to steps; when
    ``max_steps`` cuts the run short, every schedule is compressed to the shorter run.
    """

    epochs: int | Auto = Field(
        "auto", description="passes over the curated set, or auto (ssl_core.sizing)"
    )
    batch_size: int = Field(64, gt=1, description="images per step per process")
    lr: float = Field(
        1e-3,
        gt=0,
        description="peak AdamW lr after warm-up (not rescaled; recipe 4e-3 at batch 1024, "
        "sqrt-scaled)",
    )
    min_lr: float = Field(1e-6, ge=0, description="lr at the end of the cosine decay")
    warmup_epochs: float = Field(1.0, ge=0, description="linear lr warm-up from 0")
    weight_decay: float = Field(0.04, ge=0, description="weight decay at step 0")
    weight_decay_end: float = Field(0.2, ge=0, description="weight decay at the end (cosine)")
    layer_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="layer-wise lr decay factor (recipe 0.9 slows the first blocks; no gain in "
        "short runs)",
    )
    patch_embed_lr_mult: float = Field(0.2, gt=0, description="extra lr factor, patch embed")
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="student stochastic depth")
    num_register_tokens: int = Field(4, ge=0, description="register tokens in the backbone")
    layerscale_init: float = Field(
        0.1,
        gt=0,
        description="layer-scale init (recipe 1e-5: with it the teacher CLS stays ~constant for "
        "100s of steps; larger learns faster in short runs)",
    )
    head_hidden_dim: int = Field(512, gt=0, description="head MLP width")
    head_bottleneck_dim: int = Field(128, gt=0, description="head bottleneck width")
    head_nlayers: int = Field(3, ge=1, description="Linear layers in the head MLP")
    freeze_last_layer_epochs: float = Field(
        0.5, ge=0, description="prototypes frozen this long (recipe 1 epoch)"
    )
    n_local_crops: int = Field(
        6, ge=0, description="local crops per image (2 globals always; recipe 8)"
    )
    global_crops_scale: tuple[float, float] = Field(
        (0.32, 1.0), description="area range of the global random-resized crops (DINOv2)"
    )
    local_crops_scale: tuple[float, float] = Field(
        (0.05, 0.32), description="area range of the local random-resized crops (DINOv2)"
    )
    augment: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of the photometric multi-crop recipe (fields of "
        "ssl_core.data.augment.MultiCropConfig, at DINOv2's values by default), e.g. "
        "{jitter_prob: 0, solarize_prob: 0} for grayscale domains; keys in AUGMENT_KEYS",
    )
    student_temp: float = Field(0.1, gt=0, description="student softmax temperature")
    teacher_temp: float = Field(0.04, gt=0, description="teacher temperature at step 0")
    teacher_temp_final: float = Field(0.07, gt=0, description="teacher temperature after warm-up")
    teacher_temp_warmup_epochs: float = Field(
        2.0, ge=0, description="linear teacher-temperature warm-up (recipe 30 epochs)"
    )
    centering: Literal["sinkhorn_knopp", "softmax"] = Field(
        "sinkhorn_knopp", description="teacher centring (SK: 3 iterations)"
    )
    momentum_teacher: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="EMA momentum at step 0 (recipe 0.992 -> 1, made for ~10^5 steps: in a few "
        "hundred the teacher lags too far behind; benchmarks/results/teacher_head_probes.md)",
    )
    momentum_teacher_final: float = Field(
        0.99, gt=0, le=1, description="EMA momentum, end (recipe 1)"
    )
    dino_weight: float = Field(
        1.0,
        ge=0,
        description="weight of the CLS loss (DINO; train.objective ibot: in-view CLS "
        "distillation, splitmask: InfoNCE)",
    )
    ibot_weight: float = Field(1.0, ge=0, description="weight of the iBOT masked-patch loss")
    mask_probability: float = Field(0.5, ge=0, le=1, description="share of images masked")
    mask_ratio_min: float = Field(0.1, ge=0, lt=1, description="patch mask ratio, low end")
    mask_ratio_max: float = Field(0.5, gt=0, lt=1, description="patch mask ratio, high end")
    koleo_weight: float = Field(0.1, ge=0, description="KoLeo weight on student global CLS")
    grad_clip: float = Field(3.0, gt=0, description="max global grad norm")
    packed: Literal["auto", "true", "false"] = Field(
        "auto",
        description="sequence packing of crops; auto: naive until benchmarks/gpu_check.py shows "
        "packing faster on a GPU; true: packed (flex_attention block skipping on CUDA)",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="forward compute precision; auto: bf16 autocast where the hardware has bf16 "
        "matrix units (CUDA, CPUs with AMX / AVX512-BF16), else fp32 (ssl_core.train.precision)",
    )
    checkpoint_every: int = Field(50, gt=0, description="steps between checkpoints")
    log_every: int = Field(5, gt=0, description="steps between metrics.jsonl lines")
    knn_every: int = Field(
        0, ge=0, description="steps between kNN probes of the EMA model (0: only at the end)"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    distributed: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="under torchrun: auto = FSDP for >= 200 M parameters, else DDP"
    )
    num_threads: int | None = Field(
        None, gt=0, description="torch CPU threads per process (default: cores / processes)"
    )
    collapse_patience: int = Field(
        50, gt=0, description="consecutive steps of degenerate teacher entropy before failing"
    )
    max_steps: int | None = Field(None, gt=0, description="cap on optimisation steps")
    seed: int = Field(0, description="init, data order, augmentation and mask seed")

    @model_validator(mode="after")
    def _ranges(self) -> _RecipeConfig:
        if self.epochs != "auto" and self.epochs <= 0:
            raise FieldProblem("epochs", self.epochs, "must be > 0 or auto")
        if self.mask_ratio_min > self.mask_ratio_max:
            raise FieldProblem(
                "mask_ratio_min",
                self.mask_ratio_min,
                f"must be <= mask_ratio_max ({self.mask_ratio_max})",
            )
        for name in ("global_crops_scale", "local_crops_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise FieldProblem(name, [lo, hi], "must satisfy 0 < low <= high <= 1")
        if self.momentum_teacher_final < self.momentum_teacher:
            raise FieldProblem(
                "momentum_teacher_final",
                self.momentum_teacher_final,
                f"must be >= momentum_teacher ({self.momentum_teacher})",
            )
        unknown = sorted(set(self.augment) - set(AUGMENT_KEYS))
        if unknown:
            raise FieldProblem(
                "augment",
                self.augment,
                f"unknown augment keys {unknown}; allowed: {', '.join(AUGMENT_KEYS)} (crop sizes "
                "and scales have their own keys: global_crops_scale, local_crops_scale)",
            )
        return self


class TrainConfig(_RecipeConfig):
    """Teacher pretraining: DINO + iBOT + KoLeo with an EMA teacher (DINOv2 recipe, scaled down)."""

    preset: str = Field("tiny", description="backbone preset (ssl_core.models.presets)")
    objective: Literal["dinov2", "ibot", "splitmask"] = Field(
        "dinov2",
        description="dinov2: DINO + iBOT + KoLeo; small-data modes (10^3-10^4 images, masked "
        "image modelling as the main signal; ssl_core.train.objectives): ibot: iBOT on every "
        "global + in-view masked CLS distillation (weight dino_weight), no multi-crop DINO; "
        "splitmask: each global split into two random halves, each predicts the teacher's "
        "patch targets on the other, + InfoNCE between the halves' CLS (weight dino_weight)",
    )
    image_size: int = Field(
        28, gt=0, description="decode size = global crop size, px (the demo's native 28)"
    )
    patch_size: int | None = Field(
        None, gt=0, description="ViT patch size (null: the preset's; must divide image_size)"
    )
    out_dim: int = Field(512, gt=0, description="DINO / iBOT prototypes K (recipe 65536)")
    separate_ibot_head: bool = Field(False, description="own iBOT head (DINOv2 large models)")
    head_use_bn: bool = Field(
        False,
        description="BatchNorm after the hidden layers of the prototype heads (DINO's "
        "use_bn_in_head); teacher BN layers use batch statistics, as in DINO",
    )
    head_norm_last_layer: bool = Field(
        True,
        description="prototype norms fixed to 1 (DINO's norm_last_layer); false lets them "
        "grow, which sharpens the scores (less stable in DINO's runs)",
    )


class DistillConfig(_RecipeConfig):
    """Distillation of small students from the frozen teacher (DINOv2 §5): the student learns the
    teacher's tokens and/or its prototype outputs (``target``), no masking / drop-path on the
    teacher, EMA of the student kept as the final model. Defaults that differ from :class:`TrainConfig` are listed here. The EMA momentum
    (``momentum_teacher``, shared default 0.9 -> 0.99) is the student's: 0.99 -> 1 left about half
    of the exported weights at their initialisation in the demo's ~140 steps
    (benchmarks/results/distill_targets.md)."""

    students: list[str] = Field(
        default=["tiny_student"], min_length=1, description="student backbone presets"
    )
    teacher: str | None = Field(
        None,
        description="null: the teacher stage's output (paths.teacher_dir); or a path to a "
        "train_teacher folder or an official-layout DINOv2 backbone (.safetensors / .pth; a "
        "bare backbone has no prototype head, so it needs target: features)",
    )
    target: Literal["prototypes", "features", "both"] = Field(
        "features",
        description="what the student learns from the frozen teacher: prototypes = DINO + "
        "iBOT on the teacher head's outputs (DINOv2 §5); features = cosine regression of the "
        "teacher's CLS and patch tokens through a linear projector; both = the sum",
    )
    feature_weight: float = Field(
        1.0, ge=0, description="weight of the feature-distillation loss (target features/both)"
    )
    image_size: int | None = Field(
        None,
        gt=0,
        description="crop size, px (null: the teacher's training size; for an official "
        "backbone its positional-embedding size, 518 px in the releases: set e.g. 224)",
    )
    warmup_epochs: float = Field(0.2, ge=0, description="linear lr warm-up from 0")
    freeze_last_layer_epochs: float = Field(0.0, ge=0, description="prototypes frozen this long")
    teacher_temp: float = Field(0.07, gt=0, description="teacher temperature at step 0")
    teacher_temp_warmup_epochs: float = Field(0.0, ge=0, description="teacher-temp warm-up")
    mask_probability: float = Field(
        1.0, ge=0, le=1, description="share of student global crops masked (iBOT on both)"
    )


class EvalConfig(_Section):
    ks: list[int] = Field(default=[10, 20, 100, 200], min_length=1)
    min_student_fraction: float = Field(
        0.8,
        ge=0,
        le=1,
        description="the report gate fails when a student's kNN top-1 (k=20) is below this "
        "fraction of the teacher's",
    )
    temperature: float = Field(0.07, gt=0)
    batch_size: int = Field(256, gt=0)
    checkpoints: dict[str, str] = Field(
        default={},
        description="more models for the report, name -> a train_teacher folder or an "
        "official-layout backbone (.safetensors / .pth), e.g. {dinov2_s14: weights/s14.pth}",
    )


class Params(_Section):
    seed: int = 0
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    demo: DemoConfig = DemoConfig()
    ingest: IngestConfig = IngestConfig()
    embed: EmbedConfig = EmbedConfig()
    dedup: DedupConfig = DedupConfig()
    cluster: ClusterConfig = ClusterConfig()
    curate: CurateConfig = CurateConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    eval: EvalConfig = EvalConfig()
    launch: LaunchConfig = LaunchConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    @model_validator(mode="before")
    @classmethod
    def _labels_default(cls, raw: Any) -> Any:
        """A user pool without ``paths.labels`` looks for labels in data/labels, not in the
        demo's eval folder."""
        if isinstance(raw, dict) and (raw.get("data") or {}).get("source", "demo") != "demo":
            paths = dict(raw.get("paths") or {})
            paths.setdefault("labels", NO_LABELS_DIR)
            raw = {**raw, "paths": paths}
        return raw


class ConfigError(ValueError):
    """A params file that can't be used; the message names the file and the key."""


def _fields_at(loc: tuple) -> list[str]:
    """Field names of the section at ``loc`` (a pydantic error location) under :class:`Params`."""
    model: Any = Params
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            break
        model = ann
    return list(getattr(model, "model_fields", {}))


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_errors(e: ValidationError) -> list[str]:
    """One line per problem: ``dotted.key = given value: reason``."""
    lines = []
    for err in e.errors():
        loc = tuple(err["loc"])
        key, value, reason = ".".join(str(p) for p in loc), err.get("input"), err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblem):
            key = ".".join(str(p) for p in (*loc, cause.key))
            value, reason = cause.value, cause.reason
        elif err["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1)
            parent = ".".join(str(p) for p in loc[:-1]) or "the top level"
            reason = f"unknown key in {parent}" + (
                f" (did you mean {'.'.join(str(p) for p in (*loc[:-1], near[0]))}?)" if near else ""
            )
        reason = reason.removeprefix("Value error, ")
        if isinstance(value, dict) and not isinstance(cause, FieldProblem):
            lines.append(f"{key}: {reason}")  # a section-level check: its message names values
        else:
            lines.append(f"{key} = {_shown(value)}: {reason}")
    return lines


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate ``params.yaml``. Missing sections take their defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: params file not found (run from the project root or pass --params)"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        problems = "\n".join(f"  {line}" for line in describe_errors(e))
        raise ConfigError(
            f"{path}: invalid parameters (fix these keys in {path.name}; nothing was run):\n"
            + problems
        ) from None
    check_paths(params, path.resolve().parent, path)
    return params


def jobs_dir(paths: PathsConfig) -> Path:
    """``<data>/.jobs``: one folder per submitted stage job (not a DVC output)."""
    return Path(paths.manifest_dir).parent / ".jobs"


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies under it."""
    return a == b or a.is_relative_to(b)


def check_outputs_inside(paths: PathsConfig, root: Path, source: str | Path) -> None:
    """Every output path (all ``paths.*`` but ``pool`` and ``labels``) must lie inside the
    project ``root``: DVC tracks, and the run lock guards, only outputs there. Checked on the
    text of the path (``..`` and absolute paths), so ``data/`` may be a symlink to another disk.

    Raises:
        ConfigError: naming the key, the value and where it points.
    """
    root = Path(os.path.normpath(root))
    for key, value in paths.model_dump().items():
        if key in ("pool", "labels"):
            continue
        where = Path(os.path.normpath(root / value))
        if not _inside(where, root) or where == root:
            raise ConfigError(
                f"{source}: paths.{key} = {value!r} points to {where}, outside the project "
                f"{root}: outputs must live inside the project (DVC tracks them there and one "
                "run lock guards them). Use a relative path such as data/<name>; to keep "
                "artifacts on another disk, make data/ a symlink to it."
            )


def check_paths(params: Params, root: Path, source: str | Path = "params.yaml") -> None:
    """Refuse settings under which a stage could write into the user's pool or labels.

    The pool and the labels are inputs. The demo builder owns ``data/demo`` and runs only
    when ``data.source`` is ``demo``; no output folder (nor the caches next to them) may be,
    contain or sit inside an input.

    Raises:
        ConfigError: naming the keys, the paths and what to change.
    """
    p, src = params.paths, params.data.source

    def resolved(value: str) -> Path:
        return (root / value).resolve()

    if (
        root.parent.name != ".jobs"
    ):  # a launcher's snapshot in <data>/.jobs/<id>/: checked at launch
        check_outputs_inside(p, root, source)

    if src == "demo":
        if (p.pool, p.labels) != (DEMO_POOL, DEMO_LABELS):
            raise ConfigError(
                f"{source}: data.source is demo, so paths.pool must be {DEMO_POOL} and "
                f"paths.labels {DEMO_LABELS} (the demo builder's own folders), got "
                f"{p.pool!r} and {p.labels!r}. For your own images set data.source: folder "
                "(or run `sslops use-folder --pool PATH`)."
            )
        return
    pool = resolved(p.pool)
    if src == "parquet" and pool.suffix != ".parquet":
        raise ConfigError(
            f"{source}: data.source is parquet but paths.pool {p.pool!r} is not a .parquet file"
        )
    outputs = {k: resolved(v) for k, v in p.model_dump().items() if k not in ("pool", "labels")}
    outputs["demo builder (data/demo)"] = resolved(str(Path(DEMO_POOL).parent))
    outputs["caches (data/.cache)"] = resolved(str(Path(p.embeddings_dir).parent / ".cache"))
    outputs["job folders (data/.jobs)"] = resolved(str(jobs_dir(p)))
    for key, value in (("paths.pool", pool), ("paths.labels", resolved(p.labels))):
        for out_key, out in outputs.items():
            if _inside(value, out) or _inside(out, value):
                raise ConfigError(
                    f"{source}: {key} ({value}) overlaps the output {out_key} ({out}): a stage "
                    f"would write into your data. Keep your images in a folder of their own "
                    "(e.g. data/mypool or any absolute path) and outputs elsewhere."
                )


def section_dict(params: Params, *sections: str) -> dict:
    """The named sections as plain dicts (what a stage's params hash covers)."""
    return {
        s: getattr(params, s).model_dump(mode="json") if s != "seed" else params.seed
        for s in sections
    }


def parse_overrides(pairs: list[str], section: type[BaseModel]) -> dict:
    """``["key=value", ...]`` (values parsed as YAML) for fields of ``section``, as a dict.

    Raises:
        ValueError: a pair without ``=`` or a key that is not a field of ``section``.
    """
    upd = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key not in section.model_fields:
            raise ValueError(f"--set wants key=value with a train: key, got {pair!r}")
        upd[key] = yaml.safe_load(value)
    return upd
