"""Alternation schedules: which network steps, and on which loss terms, at each training step.

``phase_for(alternation, epoch, step, teacher_trains, mode=...)`` returns a :class:`Phase`.
``epoch`` counts from 0; ``step`` is the *global* optimisation step, counted from 0 across the
whole run (not reset each epoch, so the parity keeps alternating when an epoch has an odd number
of steps). ``teacher_trains`` is whether the teacher's weights change in this run (``online`` or
``mutual`` and not frozen); see ``KDConfig.teacher_trains``.

``distill.alternation``:

- ``none``: every step the teacher (if it trains) takes a step on its own loss and the student a
  step on the full combined loss ``(1 - alpha) * CE + alpha * KL + feature_weight * features``.
- ``step``: every step the teacher trains (if it trains); the student's loss alternates per global
  step: even steps hard cross-entropy only, odd steps distillation terms only (soft KL and feature
  losses).
- ``epoch``: the same alternation per epoch: even epochs hard only, odd epochs distillation only.
  Epoch 0 is a hard epoch, so the teacher has learnt something before the student imitates it.
- ``teacher_student``: the networks alternate per global step: on even steps only the teacher
  updates (the student does not step), on odd steps only the student updates, on the full combined
  loss. If the teacher does not train (``offline``, a frozen teacher, or ``mode: none``) every step
  is a student step on the full loss.

When a term is switched off by the schedule, the active term keeps weight 1 rather than its share
of the mix: a hard-only step uses plain CE (no ``1 - alpha`` factor); a distillation-only step uses
``alpha * KL + feature_weight * features``. See :class:`~kdseg.distill.objective.KDObjective`.

With ``mode: none`` (no teacher) every phase is ``student_hard=True, student_distill=False`` and the
teacher never updates, whatever the alternation.

``alpha_at(distill, epoch, epochs)`` is the weight of the soft loss in epoch ``epoch`` (from 0) of
``epochs`` (``distill.alpha_schedule``), with ``a0 = alpha``, ``a1 = alpha_final`` and
``p = epoch / (epochs - 1)`` (``p = 0`` for a one-epoch run):

- ``constant``: ``alpha`` every epoch (``alpha_final`` is ignored);
- ``linear``: ``a0 + (a1 - a0) * p``;
- ``cosine``: ``a1 + (a0 - a1) * (1 + cos(pi * p)) / 2``.

So the first epoch uses ``alpha`` and the last ``alpha_final``; the value is fixed within an epoch
and a function of the epoch only (a resumed run sees the same values). The student's CE gets
``1 - alpha_at(...)`` in combined steps, and mutual mode's teacher KL uses the same alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ALTERNATIONS = ("none", "epoch", "step", "teacher_student")


@dataclass(frozen=True)
class Phase:
    """What one training step does.

    ``update_teacher`` / ``update_student``: whether that network takes an optimiser step.
    ``student_hard`` / ``student_distill``: which terms the student's loss includes (cross-entropy;
    soft KL plus feature losses). Both False only when the student does not step.
    """

    update_teacher: bool
    update_student: bool
    student_hard: bool
    student_distill: bool

    @property
    def student_combined(self) -> bool:
        """The student's loss is the full mix (both hard and distillation terms)."""
        return self.student_hard and self.student_distill


_FULL_STUDENT = dict(update_student=True, student_hard=True, student_distill=True)


def phase_for(
    alternation: str,
    epoch: int,
    step: int,
    teacher_trains: bool,
    mode: str = "online",
) -> Phase:
    """The :class:`Phase` of global step ``step`` in epoch ``epoch`` (see the module docstring)."""
    if alternation not in ALTERNATIONS:
        raise ValueError(f"unknown alternation {alternation!r}; known: {', '.join(ALTERNATIONS)}")
    if mode == "none":
        return Phase(update_teacher=False, update_student=True, student_hard=True, student_distill=False)
    teach = bool(teacher_trains)
    if alternation == "none":
        return Phase(update_teacher=teach, **_FULL_STUDENT)
    if alternation == "step":
        hard = step % 2 == 0
        return Phase(teach, True, student_hard=hard, student_distill=not hard)
    if alternation == "epoch":
        hard = epoch % 2 == 0
        return Phase(teach, True, student_hard=hard, student_distill=not hard)
    # teacher_student
    if not teach:
        return Phase(update_teacher=False, **_FULL_STUDENT)
    if step % 2 == 0:
        return Phase(update_teacher=True, update_student=False, student_hard=False, student_distill=False)
    return Phase(update_teacher=False, **_FULL_STUDENT)


def alpha_at(distill: Any, epoch: int, epochs: int) -> float:
    """The scheduled alpha of epoch ``epoch`` (0-based) of ``epochs`` (see the module docstring).

    ``distill`` is a :class:`~kdseg.config.DistillConfig` (anything with ``alpha``,
    ``alpha_schedule`` and ``alpha_final``).
    """
    a0 = float(distill.alpha)
    schedule = distill.alpha_schedule
    if schedule == "constant":
        return a0
    if distill.alpha_final is None:
        raise ValueError(f"alpha_schedule {schedule!r} needs alpha_final")
    a1 = float(distill.alpha_final)
    p = min(max(epoch / (epochs - 1), 0.0), 1.0) if epochs > 1 else 0.0
    if schedule == "linear":
        return a0 + (a1 - a0) * p
    if schedule == "cosine":
        return a1 + (a0 - a1) * (1.0 + math.cos(math.pi * p)) / 2.0
    raise ValueError(f"unknown alpha_schedule {schedule!r}; known: constant, linear, cosine")
