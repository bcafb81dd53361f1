"""Which teachers a sweep's teacher stage trains: their configs and the hash that names their folders.

What shapes a teacher, and so names its folder ``SWEEP/teachers/<hash>/`` (:func:`teacher_hash`):
the teacher's model keys (``arch``, ``encoder``, ``weights``, ``width``), the whole ``data``
section, the teacher's training keys (``train.teacher_lr``, or ``train.lr`` while it is unset;
``TEACHER_TRAIN_KEYS``; ``teacher.train_epochs``, default the students' epochs) and ``train.seed``.
The student's keys and every ``distill`` key do not.

Keys that shape the teacher may only be fixed or searched with ``choice``/``grid`` (the stage runs
before the first trial, so it must know every teacher in advance); a ``uniform`` teacher key is
refused before anything starts (:func:`plan_teachers`). Training them: :mod:`kdseg.sweep.teacher_stage`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdseg.config import TRAIN_TEACHER, KDConfig, config_to_dict, validate_config
from kdseg.errors import ConfigError

# train.* keys the teacher's training uses besides its epochs and learning rate
TEACHER_TRAIN_KEYS = (
    "batch_size",
    "optimizer",
    "weight_decay",
    "scheduler",
    "amp",
    "device",
    "seed",
    "grad_clip",
    "max_steps_per_epoch",
    "metric",
    "channels_last",
)
# model keys of the teacher that shape it (checkpoint is what the stage produces; frozen is implied)
_MODEL_KEYS = ("arch", "encoder", "weights", "width")
_MAX_COMBINATIONS = 1000


@dataclass
class Teacher:
    hash: str
    config: KDConfig  # the teacher's own training config (distill.mode none, the teacher as student)

    @property
    def label(self) -> str:
        from kdseg.sweep.space.controls import describe_model as _describe_model

        return _describe_model(self.config.student)


def needs_stage(cfg: KDConfig) -> bool:
    """Whether ``cfg`` (a trial config before :func:`~kdseg.sweep.teacher_stage.fill_teacher`) distils from a stage-trained teacher."""
    return cfg.teacher.checkpoint == TRAIN_TEACHER and cfg.distill.mode == "offline"


def teacher_config(cfg: KDConfig) -> KDConfig:
    """The training config of ``cfg``'s teacher: ``distill.mode: none``, the teacher as the student."""
    doc = config_to_dict(cfg)
    t, tr = doc["teacher"], doc["train"]
    model = {k: t[k] for k in _MODEL_KEYS}
    train = {k: tr[k] for k in TEACHER_TRAIN_KEYS}
    train.update(
        epochs=cfg.teacher.train_epochs or cfg.train.epochs,
        lr=tr["teacher_lr"] or tr["lr"],
        num_workers=tr["num_workers"],
        checkpoint_every=1,
    )
    out = {
        "data": doc["data"],
        "teacher": model,
        "student": model,
        "distill": {"mode": "none"},
        "train": train,
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    out["name"] = f"teacher-{_digest(out)}"
    return validate_config(out, source="teacher stage")


def _digest(teacher_doc: dict[str, Any]) -> str:
    shaping = {
        "v": 1,
        "data": teacher_doc["data"],
        "model": teacher_doc["student"],
        "train": {
            k: v for k, v in teacher_doc["train"].items() if k not in ("num_workers", "checkpoint_every")
        },
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:12]


def teacher_hash(cfg: KDConfig) -> str:
    """The name of ``cfg``'s teacher folder: a hash of everything that shapes the teacher."""
    return teacher_config(cfg).name.removeprefix("teacher-")


def _uses_stage(spec) -> bool:
    if spec.base_config.teacher.checkpoint == TRAIN_TEACHER:
        return True
    for key, d in spec.space.items():
        if not d.categorical:
            continue
        values = [v.get("teacher.checkpoint") for v in d.values] if d.group else d.values
        if (d.group or key == "teacher.checkpoint") and TRAIN_TEACHER in [str(v) for v in values]:
            return True
    return False


def _shaping_keys(spec) -> Callable[[str], bool]:
    from kdseg.sweep.space import searched_keys

    searched = searched_keys(spec)
    lr_shapes = spec.base_config.train.teacher_lr is None or "train.teacher_lr" in searched

    def shapes(key: str) -> bool:
        if key.startswith(("teacher.", "data.")) or key == "distill.mode":
            return True
        if key.startswith("train."):
            name = key.removeprefix("train.")
            return name in TEACHER_TRAIN_KEYS or name == "teacher_lr" or (name == "lr" and lr_shapes)
        return False

    return shapes


def plan_teachers(spec, source: str | None = None) -> list[Teacher]:
    """Every distinct teacher the sweep's offline trials can get, in a stable order; [] without a stage.

    Raises :class:`ConfigError` (naming ``source`` and the key) when a key that shapes the teacher is
    searched over a numeric range: the stage could not know its teachers before the trials.
    """
    from kdseg.sweep.space import default_params, search_labels, trial_config

    if not _uses_stage(spec):
        return []
    src = source or spec.source or "sweep"
    shapes = _shaping_keys(spec)
    entries: list[tuple[str, list[Any]]] = []
    for key, d in spec.space.items():
        keys = sorted({k for v in d.values for k in v}) if d.group else [key]
        touched = [k for k in keys if shapes(k)]
        if not touched:
            continue
        if not d.categorical:
            hint = (
                "; set train.teacher_lr in the base config (while it is unset, train.lr is the teacher's too)"
                if key == "train.lr"
                else ""
            )
            raise ConfigError(
                f"{src}: space.{key}: {d.kind} over a key that shapes the teacher, with teacher.checkpoint: "
                f"train: the teacher stage trains every distinct teacher once before the trials, so such keys "
                f"must be fixed or searched with choice/grid{hint}"
            )
        if labels := search_labels(key, d):
            entries.append((key, labels))
    n = 1
    for _, labels in entries:
        n *= len(labels)
    if n > _MAX_COMBINATIONS:
        raise ConfigError(
            f"{src}: space: {n} combinations of keys that shape the teacher ({', '.join(k for k, _ in entries)}); "
            f"a teacher stage allows at most {_MAX_COMBINATIONS}"
        )
    defaults = default_params(spec)
    found: dict[str, Teacher] = {}
    for combo in itertools.product(*(labels for _, labels in entries)):
        point = {**defaults, **{k: v for (k, _), v in zip(entries, combo, strict=True)}}
        cfg = trial_config(spec, point)
        if needs_stage(cfg):
            t = teacher_config(cfg)
            digest = t.name.removeprefix("teacher-")
            found.setdefault(digest, Teacher(digest, t))
    return list(found.values())
