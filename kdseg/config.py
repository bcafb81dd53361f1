"""The training configuration: one typed, validated object built from YAML.

``load_config(path, overrides)`` is the only way a config enters kdseg. It reads YAML
(:mod:`kdseg.yaml_io`, aliases refused), applies ``--set key.path=value`` overrides (:mod:`kdseg.overrides`:
values parsed as YAML scalars, so ``train.lr=3e-4`` is a float and ``distill.sites=[logits,decoder]`` a
list), validates against the schema below and raises :class:`~kdseg.errors.ConfigError` naming the file and
the key path (:mod:`kdseg.validation_errors`). smp's architecture and encoder names are checked last
(:mod:`kdseg.models.smp_names`), so a config wrong elsewhere is refused without importing smp.

Relative paths (``data.root``, ``data.test_root``, ``teacher.weights``, ``teacher.checkpoint``) are resolved against the
current working directory when the config is loaded, so the resolved config written to a run folder
is valid wherever it is read from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kdseg.distill.registry import FEATURE_LOSSES, LOGIT_LOSSES
from kdseg.errors import ConfigError
from kdseg.models.registry import own_archs
from kdseg.models.smp_names import check_arch, check_encoder, model_names_checked_last
from kdseg.overrides import apply_overrides, override_keys
from kdseg.validation_errors import blame_overrides, format_validation_error
from kdseg.yaml_io import dump_yaml, read_yaml

SITES = ("encoder", "bottleneck", "decoder", "logits")
Site = Literal["encoder", "bottleneck", "decoder", "logits"]
# Names checked against registries (none of them imports torch): a registered dataset format
# (kdseg.data.registry), logit or feature loss (kdseg.distill.registry) or architecture
# (kdseg.models.registry) is selectable and searchable at once. Other archs are smp's.


def _registered(kind: str, name: str, names: Iterable[str]) -> str:
    names = tuple(names)
    if name not in names:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(names)}")
    return name


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(Strict):
    """Training-time augmentation; validation only resizes and normalises."""

    enabled: bool = True
    mode: Literal["resize", "crop"] = Field(
        "resize", description="resize: whole image to image_size; crop: random resized crop of image_size"
    )
    crop_scale: tuple[float, float] = Field((0.5, 1.0), description="area range of the random crop")
    hflip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a horizontal flip")
    color_jitter: float = Field(0.3, ge=0.0, le=1.0, description="probability of colour jitter")
    normalize: Literal["imagenet", "none"] = "imagenet"

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 < v[0] <= v[1] <= 1.0):
            raise ValueError("crop_scale must satisfy 0 < low <= high <= 1")
        return v


class SynthConfig(Strict):
    """How ``format: synthetic`` generates its data when ``root`` does not exist yet."""

    n: int = Field(96, ge=2, description="number of generated image/label pairs")
    size: tuple[int, int] = Field((96, 96), description="generated image size [H, W]")
    seed: int = 0


class DataConfig(Strict):
    format: str = Field("synthetic", description="a registered dataset format (kdseg.data.registry)")
    root: Path | None = Field(None, description="dataset folder; for synthetic, where data is generated")
    test_root: Path | None = Field(
        None,
        description="folder holding the test split in the format's layout, kept apart from root "
        "(default: root; read only by kdseg eval and sweep.final_eval)",
    )
    num_classes: int = Field(13, ge=2)
    image_size: tuple[int, int] = Field((96, 96), description="training/validation size [H, W]")
    ignore_index: int = Field(255, ge=0, le=255)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="used when there is no separate val split")
    seed: int = Field(0, description="seed of the train/val split")
    max_samples: int | None = Field(None, ge=1, description="cap on pairs per split (quick runs)")
    class_weights: Literal["none", "inverse", "median_frequency"] = Field(
        "none",
        description="weights of the hard (CE) loss of student and teacher, from the training split's "
        "pixel counts per class (kdseg.data.weights)",
    )
    augment: AugmentConfig = AugmentConfig()
    synth: SynthConfig = SynthConfig()

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        from kdseg.data.registry import available_formats  # lazy: the formats import this module

        return _registered("dataset format", v, available_formats())

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        if isinstance(v, str) and "x" in v:  # "96x128" from the command line
            return tuple(int(p) for p in v.lower().split("x"))
        if isinstance(v, int):
            return (v, v)
        return v

    @field_validator("image_size")
    @classmethod
    def _size_positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 32 or v[0] % 32 or v[1] % 32:
            raise ValueError("image_size must be positive multiples of 32 (UNet encoders downsample 32x)")
        return v

    @model_validator(mode="after")
    def _root_required(self) -> DataConfig:
        if self.format != "synthetic" and self.root is None:
            raise ValueError(f"data.root is required for format {self.format!r}")
        return self


class ModelConfig(Strict):
    arch: str = Field(
        "Unet", description="any smp architecture or one of kdseg.models.registry ('lightweight_unet', ...)"
    )
    encoder: str = Field("resnet34", description="smp encoder name (ignored by lightweight_unet)")
    weights: str | None = Field(None, description="null, 'imagenet', or a local encoder weights file")
    checkpoint: Path | None = Field(None, description="full model state_dict to start from")
    frozen: bool = Field(False, description="keep this network fixed (eval mode, no gradients)")
    width: float = Field(1.0, gt=0.0, le=4.0, description="width multiplier (lightweight_unet)")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        return check_arch(v, own_archs())

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: str, info: ValidationInfo) -> str:
        return check_encoder(v, own_arch=info.data.get("arch") in own_archs())


# ``teacher.checkpoint: train``: the sweep trains the teacher once, before the trials (kdseg.sweep.teacher_stage)
TRAIN_TEACHER = "train"


class TeacherConfig(ModelConfig):
    checkpoint: Literal["train"] | Path | None = Field(
        None, description="full model state_dict to start from; 'train': a sweep's teacher stage trains it"
    )
    train_epochs: int | None = Field(
        None, ge=1, description="checkpoint 'train': the teacher's epochs (default: the students')"
    )

    @model_validator(mode="after")
    def _epochs_need_stage(self) -> TeacherConfig:
        if self.train_epochs is not None and self.checkpoint != TRAIN_TEACHER:
            raise ValueError("teacher.train_epochs applies only with teacher.checkpoint: train")
        return self


class DistillConfig(Strict):
    mode: Literal["online", "offline", "mutual", "none"] = "online"
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the soft (logits) loss; CE gets 1-alpha")
    sites: list[Site] = Field(default_factory=lambda: ["logits"])
    logit_loss: str = Field("kl", description="the loss at the logits site (kdseg.distill.logit_losses)")
    kd_ignore_index: bool = Field(
        False,
        description="logit-site losses leave out pixels labelled data.ignore_index (default: all pixels)",
    )
    dist_beta: float = Field(1.0, ge=0.0, description="logit_loss dist: weight of the inter-class relation")
    dist_gamma: float = Field(1.0, ge=0.0, description="logit_loss dist: weight of the intra-class relation")
    affinity_grid: int = Field(
        16, ge=1, le=32, description="affinity loss: maps are max-pooled to at most grid x grid cells"
    )
    feature_loss: str = Field("mse", description="the loss at feature sites (kdseg.distill.features)")
    feature_weight: float = Field(1.0, ge=0.0)
    cwd_temperature: float = Field(1.0, gt=0.0, description="tau of feature_loss cwd")
    alternation: Literal["none", "epoch", "step", "teacher_student"] = "none"
    teacher_entropy: float = Field(0.0, ge=0.0, description="beta: teacher loss minus beta * entropy")
    alpha_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="how alpha moves from alpha (first epoch) to alpha_final (last epoch)"
    )
    alpha_final: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        validate_default=True,
        description="alpha in the last epoch (linear/cosine schedules; ignored by constant)",
    )

    @field_validator("logit_loss")
    @classmethod
    def _known_logit_loss(cls, v: str) -> str:
        return _registered("logit loss", v, LOGIT_LOSSES.names())

    @field_validator("feature_loss")
    @classmethod
    def _known_feature_loss(cls, v: str) -> str:
        return _registered("feature loss", v, FEATURE_LOSSES.names())

    @field_validator("sites", mode="before")
    @classmethod
    def _sites_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("sites")
    @classmethod
    def _sites_unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("sites must not repeat")
        return sorted(v, key=SITES.index)

    @field_validator("alpha_final")
    @classmethod
    def _alpha_final_needed(cls, v: float | None, info: ValidationInfo) -> float | None:
        schedule = info.data.get("alpha_schedule", "constant")
        if v is None and schedule != "constant":
            raise ValueError(f"alpha_schedule {schedule!r} needs alpha_final (alpha in the last epoch)")
        return v


class TrainConfig(Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0.0, description="student learning rate")
    teacher_lr: float | None = Field(None, gt=0.0, description="teacher learning rate (default: lr)")
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0.0)
    scheduler: Literal["cosine", "poly", "none"] = "cosine"
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16/fp16 on GPU, off on CPU"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(2, ge=0)
    seed: int = 0
    grad_clip: float | None = Field(None, gt=0.0)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on training steps per epoch")
    checkpoint_every: int = Field(1, ge=1, description="epochs between full checkpoints")
    metric: Literal["miou", "per_image_miou"] = Field(
        "miou",
        description="what val_miou reports (and sweeps rank by): dataset-level mIoU or the mean of "
        "per-image mIoUs; both are logged",
    )
    channels_last: bool = Field(
        False, description="NHWC memory format for models and batches (faster convolutions on recent GPUs)"
    )
    optimizer_in_backward: bool = Field(
        False,
        description="update parameters inside backward, a bucket at a time, and free their gradients: the "
        "same results with less peak memory (-110 MB for the r34/r18 quickstart pair) and 4-7% slower CPU "
        "steps; one process without fp16 only (else the step after backward, as by default)",
    )

    @model_validator(mode="after")
    def _in_backward_needs_no_clip(self) -> TrainConfig:
        if self.optimizer_in_backward and self.grad_clip:
            raise ValueError("optimizer_in_backward needs no grad_clip (clipping needs every gradient first)")
        return self

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` (in a file or in --set train.amp=off) as the boolean false.
        return "off" if v is False else v


class WandbConfig(Strict):
    project: str = "kdseg"
    entity: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    log_images_every: int = Field(5, ge=0, description="epochs between image logs; 0 = never")


class TrackingConfig(Strict):
    wandb: WandbConfig = WandbConfig()


class KDConfig(Strict):
    """A complete training run: what ``kdseg train`` reads and every sweep trial runs."""

    name: str | None = None
    data: DataConfig = DataConfig()
    # model_construct: known-good defaults, not validated at import (that would import smp)
    teacher: TeacherConfig = TeacherConfig.model_construct(arch="Unet", encoder="resnet34")
    student: ModelConfig = ModelConfig.model_construct(arch="Unet", encoder="resnet18")
    distill: DistillConfig = DistillConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _mode_needs(self) -> KDConfig:
        if self.distill.mode == "offline" and self.teacher.checkpoint is None:
            raise ValueError(
                "distill.mode 'offline' needs teacher.checkpoint (a trained teacher to distil from)"
            )
        if self.teacher.checkpoint == TRAIN_TEACHER and self.distill.mode not in ("offline", "none"):
            raise ValueError(
                f"teacher.checkpoint 'train' (a sweep's teacher stage) distils from a frozen teacher: "
                f"distill.mode must be offline, not {self.distill.mode!r}"
            )
        if self.distill.mode == "mutual" and self.teacher.frozen:
            raise ValueError("distill.mode 'mutual' trains the teacher; teacher.frozen must be false")
        return self

    @property
    def teacher_trains(self) -> bool:
        """Whether the teacher's weights change during this run."""
        return self.distill.mode in ("online", "mutual") and not self.teacher.frozen


# ----------------------------------------------------------------------------------------- loading


def validate_config(doc: Mapping[str, Any], source: str = "<config>") -> KDConfig:
    """Validate a plain mapping into a :class:`KDConfig`; ConfigError names source and key path."""
    try:
        cfg = KDConfig.model_validate(dict(doc))
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
    return resolve_paths(cfg)


def resolve_paths(cfg: KDConfig, base: Path | None = None) -> KDConfig:
    """Make every path in ``cfg`` absolute (relative to ``base``, default the working directory)."""
    base = base or Path.cwd()

    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p)).resolve()

    cfg = cfg.model_copy(deep=True)
    cfg.data.root = absolute(cfg.data.root)
    cfg.data.test_root = absolute(cfg.data.test_root)
    for m in (cfg.teacher, cfg.student):
        if m.checkpoint != TRAIN_TEACHER:
            m.checkpoint = absolute(m.checkpoint)
        if m.weights not in (None, "imagenet"):
            m.weights = str(absolute(Path(m.weights)))
    return cfg


@model_names_checked_last
def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> KDConfig:
    """Read, override and validate a training config file."""
    doc = read_yaml(path)
    if "space" in doc and ("base" in doc or "base_config" in doc):
        raise ConfigError(
            f"{path}: this is a search space, not a training config; run it with kdseg-sweep {path}, "
            f"or train its base config"
        )
    return validate_overridden(doc, overrides, source=str(path))


def validate_overridden(doc: Mapping[str, Any], overrides: Iterable, source: str) -> KDConfig:
    """Validate ``doc`` with ``overrides`` applied; a bad value that came from ``--set KEY`` is blamed on
    ``--set KEY``, one that was in the file on the file (``source``)."""
    overrides = list(overrides)
    merged = apply_overrides(doc, overrides)
    try:
        return validate_config(merged, source=source)
    except ConfigError as err:
        if not overrides:
            raise
        try:
            validate_config(doc, source=source)
        except ConfigError:
            raise err from None  # the file is wrong by itself
        try:
            KDConfig.model_validate(dict(merged))
        except ValidationError as e:
            raise ConfigError(blame_overrides(e, override_keys(overrides), source)) from None
        raise err from None


def config_to_dict(cfg: KDConfig) -> dict[str, Any]:
    """Plain YAML-safe data (paths as strings, tuples as lists)."""
    return cfg.model_dump(mode="json")


def save_config(cfg: KDConfig, path: str | os.PathLike) -> Path:
    return dump_yaml(config_to_dict(cfg), path)
