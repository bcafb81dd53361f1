"""``kdseg-sweep SPACE.yaml --smoke``: the same question, shrunk to a dry run on a CPU.

Every search key and every grid point of the space stays; what shrinks is the cost of a trial: tiny
images, a few samples and steps, two epochs, random initial weights (no download), one CPU core a
trial. The overrides are the data below; the user's own ``--set`` options come after them and win.
"""

from __future__ import annotations

import os

# applied as `--set` options before the user's own, written as a user would type them
SMOKE_OVERRIDES: tuple[str, ...] = (
    "data.image_size=[64,64]",
    "data.max_samples=8",
    "teacher.weights=null",
    "student.weights=null",
    "train.device=cpu",
    "train.amp=off",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.max_steps_per_epoch=2",
    "sweep.asha.max_t=2",
    "teacher.train_epochs=null",  # a teacher stage trains for max_t epochs too
    "sweep.asha.grace_period=1",
    "sweep.resources_per_trial.cpu=1",
    "sweep.resources_per_trial.gpu=0",
    "sweep.max_concurrent=2",
    # a toy budget teaches nobody enough to pass the quality floor; the dry run still names a winner
    "sweep.quality_floor=0",
)
SMOKE_MIN_SAMPLES = 2  # sweep.num_samples: one trial per grid combination and no-KD control, at least this


def smoke_overrides(space: str | os.PathLike, overrides: list[str]) -> list[str]:
    """The overrides of a smoke run of ``space`` (the user's ``overrides`` last, so they win)."""
    from kdseg.sweep.space import controls, initial_points, load_space

    shrunk = list(SMOKE_OVERRIDES)
    spec = load_space(space, [*shrunk, *overrides])
    n = max(len(initial_points(spec)) + len(controls(spec)), SMOKE_MIN_SAMPLES)
    return [*shrunk, f"sweep.num_samples={n}", *overrides]


def describe(overrides: list[str], user: list[str]) -> str:
    """The line printed when ``--smoke`` is applied: what it sets, in ``--set`` form."""
    own = overrides[: len(overrides) - len(user)]
    return "--smoke: a CPU dry run of the same question; it sets " + " ".join(f"--set {o}" for o in own)
