"""The schema of a search space: the sweep settings, a searched domain, the validated SweepSpec."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from kdseg.config import KDConfig
from kdseg.errors import ConfigError
from kdseg.sweep.selection import COSTS, DEFAULT_QUALITY_FLOOR, check_objective
from kdseg.sweep.space.distributions import Domain


class FaultRule(BaseModel):
    """One rule of the ``faults:`` list (a testing aid; :mod:`kdseg.sweep.faults` fires them)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["raise", "corrupt_checkpoint"] = "raise"
    epoch: int = Field(1, ge=1, description="1-based epoch at which the fault happens")
    step: int = Field(1, ge=1, description="1-based training step within that epoch")
    times: int | None = Field(None, ge=1, description="fires at most this often per trial; null: always")
    when: dict[str, Any] = Field(default_factory=dict, description="dotted config keys the trial must match")


# Top-level keys of a space file; overrides starting with these change the space file.
SPACE_KEYS = ("base", "base_config", "space", "sweep", "storage", "name", "faults")
# Sections of the training config; overrides starting with these change the base config.
CONFIG_SECTIONS = tuple(k for k in KDConfig.model_fields if k != "name")
# Config keys a space may not search: the sweep sets them for every trial.
RESERVED_KEYS = {
    "train.epochs": "every trial runs sweep.asha.max_t epochs; set sweep.asha.max_t instead",
    "name": "every trial gets its own name",
}
_GROUP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_sweep_name(name: str, where: str) -> str:
    """The one rule for sweep names (``--name``, a space file's ``name:``, ``kdseg submit --name``)."""
    if not isinstance(name, str) or not _SWEEP_NAME.match(name):
        raise ConfigError(
            f"{where}: sweep name {name!r}: must be a plain folder name (letters, digits, . _ -; "
            f"starting with a letter or digit)"
        )
    return name


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PRIMITIVES = (type(None), bool, int, float, str)


# ------------------------------------------------------------------------------------------ models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


DEFAULT_GRACE_PERIOD = 2


class AshaSettings(_Strict):
    """ASHA early stopping; the time unit is the epoch (one ``training_iteration`` per epoch)."""

    max_t: int | None = Field(
        None, ge=1, description="epochs of a trial that is never stopped; default: base train.epochs"
    )
    # Defaults measured (benchmarks/asha_vs_fifo.py; docs/performance.md, "ASHA: the rungs compare the
    # score"): Ray's ASHA replayed on what kdseg's rungs compare (the score, with the quality floor) kept
    # the best student in 100% and 96% of 500 trial orders with grace 2 / rf 2 (12 and 36 configs), the
    # only setting replayed that kept it in >= 95% at both sizes, at 54% and 50% of FIFO's epochs; with
    # grace 1 / rf 3 in 27% and 16%: after one epoch a co-trained teacher can still be at chance, and so
    # can the floor that its student is held to.
    grace_period: int | None = Field(
        None,
        ge=1,
        description=f"epochs before a trial can be stopped; default {DEFAULT_GRACE_PERIOD} (max_t if smaller)",
    )
    reduction_factor: float = Field(
        2.0, gt=1.0, description="1/reduction_factor of trials go on at each rung"
    )


class Resources(_Strict):
    """What one trial reserves (fractions of a GPU share it); with ``workers``, what each of its
    data-parallel workers reserves (:mod:`kdseg.sweep.workers`)."""

    cpu: float = Field(1.0, gt=0.0, description="CPUs of a trial, or of each worker")
    gpu: float = Field(0.0, ge=0.0, description="GPUs of a trial, or of each worker (then 0 or 1)")
    workers: StrictInt | None = Field(
        None,
        ge=1,
        description="run each trial as a Ray Train data-parallel job of this many workers; "
        "null: the trial trains in its own process",
    )

    @model_validator(mode="after")
    def _one_gpu_per_worker(self) -> Resources:
        if self.workers is not None and self.gpu not in (0, 1):
            raise ValueError(
                f"gpu: {self.gpu} with workers: each worker is one process on 0 or 1 GPU "
                f"(DDP processes cannot share a GPU; more GPUs: more workers)"
            )
        return self


class FinalEval(_Strict):
    """After the sweep, the chosen students on the test split, once; never used for selection
    (:mod:`kdseg.final_eval`)."""

    split: Literal["test"] = "test"
    top_k: int | None = Field(None, ge=1, description="the K best rows of the leaderboard (default 3)")
    pareto: bool = Field(False, description="the Pareto front instead of the top K")

    @model_validator(mode="after")
    def _one_selection(self) -> FinalEval:
        if self.pareto and self.top_k is not None:
            raise ValueError("top_k and pareto: choose one")
        if not self.pareto and self.top_k is None:
            self.top_k = 3
        return self


class SweepSettings(_Strict):
    num_samples: int = Field(
        8, ge=1, description="trials to run (grid combinations and no-KD controls included)"
    )
    metric: Literal["val_miou"] = Field(
        "val_miou",
        description="the accuracy every objective is built from (train.metric chooses its definition)",
    )
    mode: Literal["max"] = "max"
    objective: str = Field(
        "iou_per_mparam",
        description="what the study, the searcher, ASHA and the leaderboard optimise (kdseg.selection)",
    )
    cost: Literal[COSTS] = Field(  # type: ignore[valid-type]  (the costs are written once, in selection)
        "student_params", description="objective: pareto minimises this next to maximising val mIoU"
    )
    quality_floor: float = Field(
        DEFAULT_QUALITY_FLOOR,
        ge=0.0,
        le=1.0,
        description="a trial counts for the objective only at >= this fraction of its teacher's val mIoU",
    )
    asha: AshaSettings = AshaSettings()
    resources_per_trial: Resources = Resources()
    max_concurrent: int | None = Field(None, ge=1, description="null: as many as resources allow")
    seed: int | None = Field(0, description="seed of the Optuna sampler")
    max_failures: int = Field(0, ge=-1, description="retries of a failed trial (-1: unlimited)")
    final_eval: FinalEval | None = Field(
        None, description="measure the top_k (or pareto) trials on the test split after the sweep"
    )

    @field_validator("final_eval", mode="before")
    @classmethod
    def _final_eval_short(cls, v: Any) -> Any:
        # final_eval: pareto | true | K  as short forms of the mapping; false = off
        if v is False:
            return None
        if v is True:
            return {}
        if v == "pareto":
            return {"pareto": True}
        return {"top_k": v} if isinstance(v, int) else v

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, v: str) -> str:
        return check_objective(v)


class _SpaceFile(_Strict):
    """The raw top level of a space file (before the base config and domains are resolved)."""

    base: str | None = None
    base_config: dict[str, Any] | None = None
    space: dict[str, Any] | None = None
    sweep: SweepSettings = SweepSettings()
    storage: str | None = None
    name: str | None = None
    faults: list[FaultRule] = []


class SweepSpec(_Strict):
    """A validated search space: the base training config, the searched domains, the sweep settings."""

    base: Path = Field(description="absolute path of the base training config")
    base_config: KDConfig
    space: dict[str, Domain]
    sweep: SweepSettings
    storage: str | None = None
    name: str | None = None
    source: Path | None = Field(None, description="the file this spec was loaded from")
    faults: list[FaultRule] = Field(default_factory=list, description="fault injection (a testing aid)")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="other top-level keys of a resolved sweep.yaml (not validated)"
    )

    @property
    def max_t(self) -> int:
        return int(self.sweep.asha.max_t)
