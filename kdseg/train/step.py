"""One training step of teacher and student, and what ties the step to several processes.

Per step (see :mod:`kdseg.distill.schedule` for the alternation phases)::

    teacher: logits_t = T(x)                       (no_grad when it does not update this step)
    student: logits_s = S(x)
    L_t = CE(logits_t) [+ alpha T^2 KL(s_T || t_T) in mutual mode] - beta H(t_T)
    L_s = (1-alpha) CE(logits_s) + alpha T^2 KL(t_T || s_T) + feature_weight * mean_site F(adapt(s), t)
    one backward of L_t + L_s (the graphs are disjoint: each network sees the other detached),
    then a step of each optimiser that updates this step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from torch import nn

from kdseg.train.setup import student_side

if TYPE_CHECKING:
    from kdseg.train.setup import Models


class Diverged(RuntimeError):
    """A loss became NaN or infinite; the run cannot continue meaningfully."""


def check_finite(parts: dict[str, float], who: str, epoch: int, step: int) -> None:
    total = parts.get("total")
    if total is not None and not math.isfinite(total):
        raise Diverged(f"{who} loss is {total} at epoch {epoch + 1}, step {step} ({parts})")


class LossStep(nn.Module):
    """``KDObjective.step_loss`` as ``forward``, so that DDP can wrap the objective: DDP averages the
    gradients of the parameters used in a forward made through it (the feature adapters)."""

    def __init__(self, objective: nn.Module):
        super().__init__()
        self.objective = objective

    def forward(self, *args, **kwargs):
        return self.objective.step_loss(*args, **kwargs)


def train_step(accelerator, m: Models, student, teacher, objective, opt_s, opt_t, x, y, phase, t) -> dict:
    """One optimisation step of teacher and/or student; returns the loss parts as floats.

    ``objective`` is ``m.objective`` or its prepared :class:`LossStep`; the loss goes through the
    latter only when the adapters learn this step, since DDP expects a gradient for every parameter
    it wraps after each forward made through it. ``t`` is the config's ``train`` section.
    """
    sites = m.feature_sites
    t_logits = t_feats = None
    if t.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with accelerator.autocast():
        if teacher is not None:
            t_grad = m.teacher_trains and phase.update_teacher
            with nullcontext() if t_grad else torch.no_grad():
                t_logits = teacher(x)
            t_feats = {s: m.t_taps.features[s] for s in sites}
        s_grad = phase.update_student
        with nullcontext() if s_grad else torch.no_grad():
            s_logits = student(x)
        s_feats = {s: m.s_taps.features[s] for s in sites}

        adapters_learn = s_grad and phase.student_distill and bool(sites)
        step_loss = objective if objective is not m.objective and adapters_learn else m.objective.step_loss
        # both losses at once: each log_softmax(logits / T) computed once, one host sync for the parts
        loss, out = step_loss(
            s_logits,
            s_feats,
            t_logits,
            t_feats,
            y,
            phase,
            student_learns=s_grad,
            teacher_learns=teacher is not None and m.teacher_trains and phase.update_teacher,
        )
    if loss is None:
        return out
    bad = ~torch.isfinite(loss.detach())
    if accelerator.num_processes > 1:  # all stop together: one alone would leave the others in backward
        bad = accelerator.reduce(bad.float(), reduction="sum") > 0
    if bad:
        raise Diverged(f"loss is {loss.item()} ({out})")
    if s_grad:
        opt_s.zero_grad(set_to_none=True)
    if opt_t is not None and phase.update_teacher:
        opt_t.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    if t.grad_clip:
        accelerator.clip_grad_norm_(student_side(student, m.objective), t.grad_clip)
        if opt_t is not None:
            accelerator.clip_grad_norm_(teacher.parameters(), t.grad_clip)
    # each step frees the gradients it used: the next forward (and validation, and the checkpoint write)
    # then runs without a network's worth of stale gradients (148 MB for the quickstart pair)
    if s_grad:
        opt_s.step()
        opt_s.zero_grad(set_to_none=True)
    if opt_t is not None and phase.update_teacher:
        opt_t.step()
        opt_t.zero_grad(set_to_none=True)
    return out


def across_processes(accelerator, sums: dict[str, float], n_images: int) -> tuple[dict[str, float], int]:
    """The epoch's loss sums averaged over processes (every process ran the same number of steps),
    and the images trained on by all of them."""
    if accelerator.num_processes == 1:
        return sums, n_images
    keys = sorted(sums)  # the same on every process: the phases are
    values = torch.tensor(
        [*(sums[k] for k in keys), n_images], dtype=torch.float64, device=accelerator.device
    )
    values = accelerator.reduce(values, reduction="sum").tolist()
    n = accelerator.num_processes
    return {k: v / n for k, v in zip(keys, values[:-1], strict=True)}, int(values[-1])


def broadcast_buffers(accelerator, model: nn.Module | None) -> None:
    """The main process's buffers (BatchNorm statistics) on every process.

    DDP broadcasts them only before some forwards, and each process then updates its own copy
    with its own batch; this makes every process validate the model the main process saves.
    """
    if model is None or accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    for b in accelerator.unwrap_model(model).buffers():
        dist.broadcast(b, src=0)


# The parameters are stepped in buckets of about this many bytes (in each group's order, which follows
# the network's layers): a few dozen optimiser.step() calls per step for the quickstart pair instead of
# ~290, so that on a GPU each call's foreach kernels cover a bucket, not one tensor (not measured: no GPU
# here). On the CPU one parameter at a time measured the same (kd_step ratio 1.038 against 1.048 with
# buckets, trial peak 1569-1570 against 1567-1572 MB; docs/performance.md).
BUCKET_BYTES = 8 * 2**20


class StepsInBackward:
    """Parameters updated by their optimiser as soon as backward has accumulated their gradients, which
    are then freed: the networks' gradients never exist all at once (PyTorch's "optimizer step in
    backward" recipe, ``Tensor.register_post_accumulate_grad_hook``), a bucket of parameters at a time.

    A bucket is stepped by the optimiser's own ``step`` over just its parameters once every one of them
    has its gradient, so the results are those of one ``step`` after backward: Adam(W) and SGD update each
    parameter from its own gradient and state only, and backward has used a parameter's value for the last
    time when its gradient is accumulated. A bucket that does not complete (a parameter unused this step)
    keeps its gradients for the ``step`` after backward, which then updates exactly those; for the rest it
    finds no gradient and changes nothing. Not for what needs every gradient first: ``grad_clip``, DDP's
    all-reduce, a gradient scaler (fp16).
    """

    def __init__(self, optimizers: Iterable[torch.optim.Optimizer], bucket_bytes: int = BUCKET_BYTES):
        self.handles = []
        for opt in optimizers:
            raw = getattr(opt, "optimizer", opt)  # under accelerate's AcceleratedOptimizer
            for index, group in enumerate(raw.param_groups):
                for bucket in _buckets(group["params"], bucket_bytes):
                    hook = _step_bucket(raw, index, bucket)
                    self.handles.extend(p.register_post_accumulate_grad_hook(hook) for p in bucket)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def steps_in_backward(accelerator, t, optimizers) -> StepsInBackward | None:
    """:class:`StepsInBackward` for ``optimizers`` (None entries skipped) when ``train.optimizer_in_backward``
    (``t``) asks for it and nothing needs every gradient first: one process, no ``grad_clip``, no gradient
    scaler; else None (one step after backward)."""
    if not t.optimizer_in_backward:
        return None
    if accelerator.num_processes == 1 and not t.grad_clip and accelerator.scaler is None:
        return StepsInBackward([o for o in optimizers if o is not None])
    logging.getLogger(__name__).warning(
        "train.optimizer_in_backward: not with %d processes or fp16's gradient scaler; "
        "the optimisers step after backward",
        accelerator.num_processes,
    )
    return None


def _buckets(params: list[torch.Tensor], limit: int) -> Iterable[list[torch.Tensor]]:
    """Consecutive trainable ``params`` in groups of at most ``limit`` bytes (a larger tensor alone)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for p in params:
        if not p.requires_grad:
            continue
        n = p.numel() * p.element_size()
        if bucket and size + n > limit:
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += n
    if bucket:
        yield bucket


def _step_bucket(opt: torch.optim.Optimizer, index: int, bucket: list[torch.Tensor]):
    def hook(_: torch.Tensor) -> None:
        if any(q.grad is None for q in bucket):  # the bucket's other gradients are still to come
            return
        group = opt.param_groups[index]  # looked up now: load_state_dict replaces the group dicts
        params = group["params"]
        group["params"] = bucket  # step() walks these parameters, not the whole group
        try:
            opt.step()
        finally:
            group["params"] = params
        for q in bucket:
            q.grad = None

    return hook
