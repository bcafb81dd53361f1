"""A run's full checkpoint state (``kdseg-checkpoint-v1``): what it holds, and putting it back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdseg.checkpoint import Pointer, load_checkpoint
from kdseg.config import config_to_dict
from kdseg.errors import CheckpointError
from kdseg.layout import FULL_CHECKPOINT

if TYPE_CHECKING:
    from kdseg.train.setup import Models

FORMAT = "kdseg-checkpoint-v1"


def cpu_state(model) -> dict[str, Any]:
    """A module's ``state_dict`` on the CPU (the same tensors when it is there already: no copy)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def training_state(
    cfg, epoch, global_step, accelerator, student_state, teacher, objective, opt_s, sched_s, opt_t, sched_t
) -> dict[str, Any]:
    """Everything ``--resume`` needs after (1-based) ``epoch``; ``teacher`` None leaves it out (a frozen
    teacher loaded from ``teacher.checkpoint`` is rebuilt from that file on resume)."""
    unwrap = accelerator.unwrap_model
    state = {
        "format": FORMAT,
        "config": config_to_dict(cfg),
        "epoch": epoch,
        "global_step": global_step,
        "student": student_state,
        "objective": unwrap(objective).state_dict(),
        "opt_s": opt_s.state_dict(),
        "sched_s": sched_s.state_dict(),
    }
    if teacher is not None:
        state["teacher"] = cpu_state(unwrap(teacher))
    if opt_t is not None:
        state["opt_t"] = opt_t.state_dict()
        state["sched_t"] = sched_t.state_dict()
    return state


def restore(source: str | Path | Pointer, m: Models, opt_s, sched_s, opt_t, sched_t) -> tuple[int, int]:
    """Load a full checkpoint (a file, a run folder holding ``checkpoint.pt``, or a sweep's
    :class:`~kdseg.checkpoint.Pointer`) into models, optimisers and schedules; its (epoch, global step)."""
    if isinstance(source, Pointer):
        path, state = source.path, source.load()
    else:
        path = Path(source)
        if path.is_dir():
            path = path / FULL_CHECKPOINT
        state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a kdseg training checkpoint (no 'format: {FORMAT}')")
    try:
        m.student.load_state_dict(state["student"])
        m.objective.load_state_dict(state["objective"])
        opt_s.load_state_dict(state["opt_s"])
        sched_s.load_state_dict(state["sched_s"])
        if m.teacher is not None and "teacher" in state:
            m.teacher.load_state_dict(state["teacher"])
        if opt_t is not None:
            opt_t.load_state_dict(state["opt_t"])
            sched_t.load_state_dict(state["sched_t"])
    except (KeyError, RuntimeError, ValueError) as e:
        msg = str(e).strip().splitlines()[0][:300]
        raise CheckpointError(f"{path}: does not fit this config ({type(e).__name__}: {msg})") from None
    return int(state["epoch"]), int(state["global_step"])
