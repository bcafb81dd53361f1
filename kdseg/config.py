"""The training configuration: one typed, validated object built from YAML.

``load_config(path, overrides)`` is the only way a config enters kdseg. It reads YAML with
``yaml.safe_load``, applies ``--set key.path=value`` overrides (values parsed as YAML scalars, so
``train.lr=3e-4`` is a float and ``distill.sites=[logits,decoder]`` a list), validates against the
schema below and raises :class:`~kdseg.errors.ConfigError` naming the file and the key path.

Relative paths (``data.root``, ``data.test_root``, ``teacher.weights``, ``teacher.checkpoint``) are resolved against the
current working directory when the config is loaded, so the resolved config written to a run folder
is valid wherever it is read from.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
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
from kdseg.fileio import atomic_write
from kdseg.models.registry import own_archs

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


# smp's architecture and encoder names need `import segmentation_models_pytorch` (torch, timm: seconds).
# load_config and the space loader check them last (model_names_checked_last), so that a config wrong
# anywhere else is refused without that import.
_SMP_DEFERRED: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar(
    "smp_deferred", default=None
)


def _smp_check_deferred() -> bool:
    """Inside a first pass of :func:`model_names_checked_last`: skip (and note) the smp check."""
    skipped = _SMP_DEFERRED.get()
    if skipped is None:
        return False
    skipped.append(True)
    return True


def model_names_checked_last(fn: Callable) -> Callable:
    """Run ``fn`` (a loader that validates configs) once with smp's name checks skipped, and again
    with them only when that pass succeeded and skipped one: every other error comes first and
    without importing smp and torch; the messages are those of one plain pass."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _SMP_DEFERRED.get() is not None:  # an outer loader's second pass checks them
            return fn(*args, **kwargs)
        skipped: list[bool] = []
        token = _SMP_DEFERRED.set(skipped)
        try:
            result = fn(*args, **kwargs)
        finally:
            _SMP_DEFERRED.reset(token)
        return fn(*args, **kwargs) if skipped else result

    return wrapper


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
        if v in own_archs() or _smp_check_deferred():
            return v
        import segmentation_models_pytorch as smp  # lazy: heavy import

        if v.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
            known = sorted(a.__name__ for a in smp.MODEL_ARCHITECTURES_MAPPING.values()) + list(own_archs())
            raise ValueError(f"unknown architecture {v!r}; known: {', '.join(known)}")
        return v

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: str, info: ValidationInfo) -> str:
        if info.data.get("arch") in own_archs() or v.startswith("tu-") or _smp_check_deferred():
            return v
        import segmentation_models_pytorch as smp

        names = smp.encoders.get_encoder_names()
        if v not in names:
            stem = v.split("-")[0].split("_")[0].rstrip("0123456789")
            close = [n for n in names if stem and n.startswith(stem)][:8]
            hint = f"; similar: {', '.join(close)}" if close else "; or any timm encoder as 'tu-NAME'"
            raise ValueError(f"unknown encoder {v!r}{hint}")
        return v


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


# --------------------------------------------------------------------------------------------- I/O


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``) as it reads them.

    An alias shares a node; nested aliases grow exponentially when the data is copied or written
    (the "billion laughs" bomb). kdseg's files never need them, so they are refused at load time.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not accepted in kdseg files; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` without aliases (see :class:`_NoAliasLoader`)."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load`` (aliases refused); a clear ConfigError for any problem."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        doc = safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(doc).__name__}")
    return doc


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=3e-4"`` -> ``("train.lr", 0.0003)``; the value is parsed as a YAML scalar."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.composer.ComposerError as e:
        raise ConfigError(f"--set {key}: {e.problem}") from None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, float) or _looks_like_float(raw):
        value = float(raw) if _looks_like_float(raw) else value
    return key, value


def _looks_like_float(raw: str) -> bool:
    # YAML 1.1 reads "1e-3" as a string; users mean a number.
    try:
        float(raw)
    except ValueError:
        return False
    return any(c in raw.lower() for c in ".e") and raw.strip().lower() not in ("nan", "inf", "-inf")


def get_dotted(doc: Mapping[str, Any], key: str) -> Any:
    """``doc[a][b][c]`` for ``key == "a.b.c"``, or None where the path does not exist."""
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def set_dotted(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set ``doc[a][b][c] = value`` for ``key == "a.b.c"``, creating mappings on the way."""
    parts = key.split(".")
    node = doc
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is not a section; cannot set {key}")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(doc: Mapping[str, Any], overrides: Iterable[str | tuple[str, Any]]) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``key.path=value`` overrides applied."""
    out = copy.deepcopy(dict(doc))
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        set_dotted(out, key, value)
    return out


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] not in ("value_error", "missing") and isinstance(e.get("input"), (str, int, float)):
            msg += f", got {e['input']!r}"  # pydantic's own checks do not say what they were given
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


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
        keys = [(parse_override(o) if isinstance(o, str) else o)[0] for o in overrides]
        try:
            KDConfig.model_validate(dict(merged))
        except ValidationError as e:
            lines = []
            for line in format_validation_error(e, "").splitlines():
                loc = line.removeprefix(": ").split(": ", 1)[0]
                key = next(
                    (k for k in keys if loc == k or loc.startswith(k + ".") or k.startswith(loc)), None
                )
                lines.append(f"--set {key or loc}: {line.removeprefix(': ').split(': ', 1)[-1]} ({source})")
            raise ConfigError("\n".join(lines)) from None
        raise err from None


def config_to_dict(cfg: KDConfig) -> dict[str, Any]:
    """Plain YAML-safe data (paths as strings, tuples as lists)."""
    return cfg.model_dump(mode="json")


def dump_yaml(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write YAML atomically (temp file in the same folder, then rename)."""
    with atomic_write(path, "w") as f:
        yaml.safe_dump(dict(data), f, sort_keys=False, default_flow_style=None)
    return Path(path)


def save_config(cfg: KDConfig, path: str | os.PathLike) -> Path:
    return dump_yaml(config_to_dict(cfg), path)
