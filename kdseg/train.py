"""``train_kd``: the one training function behind ``kdseg train``, every sweep trial and the tests.

It knows nothing about Ray, W&B or the command line. It gets a validated :class:`KDConfig`, decoded
data (:class:`kdseg.data.SegData`, shared between trials by the sweep) and a ``report`` callable,
and calls ``report(metrics, checkpoint_dir)`` once per epoch with a flat dict of numbers and the
folder holding that epoch's checkpoint (``None`` when no checkpoint was written that epoch). A sweep
passes a function that forwards both to ``tune.report``; the CLI passes one that prints progress.

Per training step (see :mod:`kdseg.distill.schedule` for the alternation phases)::

    teacher: logits_t = T(x)                       (no_grad when it does not update this step)
    student: logits_s = S(x)
    L_t = CE(logits_t) [+ alpha T^2 KL(s_T || t_T) in mutual mode] - beta H(t_T)
    L_s = (1-alpha) CE(logits_s) + alpha T^2 KL(t_T || s_T) + feature_weight * mean_site F(adapt(s), t)
    one backward of L_t + L_s (the graphs are disjoint: each network sees the other detached),
    then a step of each optimiser that updates this step.

With ``run_dir`` it writes ``config.yaml``, ``metrics.jsonl`` (one JSON object per epoch),
``student.pt`` (the student's state_dict) and ``checkpoint.pt`` (everything needed to resume), each
atomically. ``resume`` continues from such a ``checkpoint.pt``; with the same config and data the
resumed run is identical to an uninterrupted one, because all randomness is re-seeded per epoch.

Data parallel (``accelerate launch`` / ``torchrun``, any number of processes): each process trains on
its shard of every global batch (``train.batch_size`` per process); the student, a trained teacher and
the feature adapters are prepared (DDP), so their gradients are averaged across processes; validation
gathers per-image confusion matrices without the samples that pad the last batch; the epoch's losses
are averaged across processes; only the main process writes files, runs the hooks and calls
``report``. Every process returns the same metrics (but for what hooks add, on the main process).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdseg.checkpoint import load_checkpoint, save_atomic
from kdseg.config import KDConfig, config_to_dict, save_config
from kdseg.errors import CheckpointError
from kdseg.layout import (
    CONFIG_FILE,
    FULL_CHECKPOINT,
    STUDENT_CHECKPOINT,
    append_metrics,
    truncate_metrics,
)

Report = Callable[[dict[str, Any], Path | None], None]


@dataclass
class EpochContext:
    """What an epoch hook sees after validation, before the epoch is reported.

    Hooks (e.g. image logging) may read the models and data and add keys to ``metrics``; they must
    not change the models' weights or modes (``evaluate`` puts them back in train mode after).
    """

    cfg: KDConfig
    epoch: int  # 1-based, as in metrics["epoch"]
    metrics: dict[str, Any]
    student: nn.Module
    teacher: nn.Module | None
    data: Any  # kdseg.data.SegData
    device: torch.device
    run_dir: Path | None


EpochHook = Callable[[EpochContext], None]


class Diverged(RuntimeError):
    """A loss became NaN or infinite; the run cannot continue meaningfully."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def make_accelerator(cfg: KDConfig):
    """An ``accelerate.Accelerator`` for this config (fresh state each call: trials share processes)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    use_cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        from kdseg.errors import ConfigError

        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available")
    amp = cfg.train.amp
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if use_cuda else "off"
    AcceleratorState._reset_state(reset_partial_state=True)
    # A seedable sampler shuffles epoch e with seed + e: a resumed run sees the same batches.
    loader_cfg = DataLoaderConfiguration(
        use_seedable_sampler=True, data_seed=cfg.train.seed, non_blocking=use_cuda
    )
    return Accelerator(
        cpu=not use_cuda, mixed_precision="no" if amp == "off" else amp, dataloader_config=loader_cfg
    )


def _optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)


def _scheduler(name: str, opt: torch.optim.Optimizer, total_steps: int):
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    if name == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=max(total_steps, 1), power=0.9)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


class _Models:
    """Teacher, student, their feature taps and the distillation objective, built from a config."""

    def __init__(self, cfg: KDConfig, num_classes: int, ignore_index: int, class_weights=None):
        from kdseg.distill import KDObjective
        from kdseg.models import FeatureTaps, build_model, count_params, feature_shapes

        d = cfg.distill
        self.student = build_model(cfg.student, num_classes, role="student")
        self.student_params = count_params(self.student)
        self.teacher = None if d.mode == "none" else _build_teacher(cfg, num_classes)
        self.teacher_params = count_params(self.teacher) if self.teacher is not None else 0
        self.teacher_trains = self.teacher is not None and cfg.teacher_trains
        if self.teacher is not None and not self.teacher_trains:
            self.teacher.eval().requires_grad_(False)
        self.feature_sites = [s for s in d.sites if s != "logits"] if self.teacher is not None else []
        s_shapes = t_shapes = None
        if self.feature_sites:
            size = tuple(cfg.data.image_size)
            s_shapes = feature_shapes(self.student, self.feature_sites, size)
            t_shapes = feature_shapes(self.teacher, self.feature_sites, size)
        self.objective = KDObjective(
            d,
            num_classes=num_classes,
            ignore_index=ignore_index,
            class_weights=class_weights,
            student_shapes=s_shapes,
            teacher_shapes=t_shapes,
        )
        self.s_taps = FeatureTaps(self.student, self.feature_sites)
        self.t_taps = FeatureTaps(self.teacher, self.feature_sites) if self.teacher is not None else None


def _build_teacher(cfg: KDConfig, num_classes: int) -> nn.Module:
    """The teacher; in offline mode a checkpoint problem says how to get a trained teacher."""
    from kdseg.models import build_model

    try:
        return build_model(cfg.teacher, num_classes, role="teacher")
    except CheckpointError as e:
        if cfg.distill.mode != "offline":
            raise
        raise CheckpointError(
            f"{e}. distill.mode 'offline' distils from a trained, frozen teacher: train it first with "
            "this config and --set distill.mode=none --set student.arch=<teacher.arch> "
            "--set student.encoder=<teacher.encoder>, then point teacher.checkpoint at that run's "
            "student.pt (or at the checkpoint.pt of an online run); see experiments/README.md"
        ) from None


def _check_finite(parts: dict[str, float], who: str, epoch: int, step: int) -> None:
    total = parts.get("total")
    if total is not None and not math.isfinite(total):
        raise Diverged(f"{who} loss is {total} at epoch {epoch + 1}, step {step} ({parts})")


class _LossStep(nn.Module):
    """``KDObjective.step_loss`` as ``forward``, so that DDP can wrap the objective: DDP averages the
    gradients of the parameters used in a forward made through it (the feature adapters)."""

    def __init__(self, objective: nn.Module):
        super().__init__()
        self.objective = objective

    def forward(self, *args, **kwargs):
        return self.objective.step_loss(*args, **kwargs)


def _student_side(student: nn.Module, objective: nn.Module) -> list[nn.Parameter]:
    """What the student's optimiser updates and ``grad_clip`` bounds together: student and adapters."""
    return [*student.parameters(), *objective.parameters()]


def _update_counts(cfg: KDConfig, steps_per_epoch: int, teacher_trains: bool) -> tuple[int, int]:
    """Optimiser steps of the student and of the teacher over the run: what each schedule spans.

    ``alternation: teacher_student`` steps each network on half of the steps only.
    """
    from kdseg.distill import phase_for

    n_s = n_t = 0
    for epoch in range(cfg.train.epochs):
        for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch):
            phase = phase_for(cfg.distill.alternation, epoch, step, teacher_trains, mode=cfg.distill.mode)
            n_s += phase.update_student
            n_t += phase.update_teacher
    return n_s, n_t


def _across_processes(accelerator, sums: dict[str, float], n_images: int) -> tuple[dict[str, float], int]:
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


def _broadcast_buffers(accelerator, model: nn.Module | None) -> None:
    """The main process's buffers (BatchNorm statistics) on every process.

    DDP broadcasts them only before some forwards, and each process then updates its own copy
    with its own batch; this makes every process validate the model the main process saves.
    """
    if model is None or accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    for b in accelerator.unwrap_model(model).buffers():
        dist.broadcast(b, src=0)


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, ignore_index: int, accelerator) -> dict[str, Any]:
    """Dataset-level mIoU, per-image mIoU, per-class IoU and pixel accuracy of ``model`` on ``loader``.

    Keys: ``miou``, ``per_image_miou``, ``pixel_acc``, ``per_class_iou`` (see :mod:`kdseg.metrics`).
    With several processes every one returns the numbers of the whole split: each batch's per-image
    confusion matrices are gathered with ``accelerator.gather_for_metrics``, which drops the samples
    accelerate repeats to pad the last batch, so every validation pixel counts exactly once.
    """
    from kdseg.metrics import ConfusionMatrix

    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=accelerator.device, per_image=True)
    for x, y in loader:
        with accelerator.autocast():
            logits = model(x)
        cm.add_image_counts(accelerator.gather_for_metrics(cm.image_counts(logits.argmax(1), y)))
    model.train(was_training)
    return cm.compute()


def train_kd(
    cfg: KDConfig,
    data,
    report: Report | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
    hooks: Sequence[EpochHook] = (),
    keep_last_checkpoint: bool = True,
    report_every_process: bool = False,
    checkpoint_dir: str | Path | None = None,
    student_at: Collection[int] | None = None,
) -> dict[str, Any]:
    """Train teacher and student together as ``cfg`` says; returns the last epoch's metrics.

    ``data`` is a :class:`kdseg.data.SegData`; ``report(metrics, checkpoint_dir)`` is called after
    every epoch; ``on_step(step, steps_per_epoch)`` after every training step (progress bars);
    each of ``hooks`` gets an :class:`EpochContext` after validation, before the report.
    ``keep_last_checkpoint=False`` skips the full checkpoint after the final epoch (a sweep trial
    that has finished is never resumed); student.pt is always written after the last epoch.
    ``checkpoint_dir`` (default ``run_dir``) is where ``checkpoint.pt`` goes: a sweep trial hands Tune a
    scratch folder that Tune copies into its storage, so the file is written without fsync (Tune's copy
    is the durable one); it is written without zip CRC32s (``torch.load`` never reads them; most of
    the write time). ``student_at``: the (1-based) epochs after which ``student.pt`` is written
    besides the last (a sweep: the epochs at which ASHA can stop the trial); default: with every full
    checkpoint. A teacher that does not train and is loaded from ``teacher.checkpoint`` is rebuilt from
    it on resume, so the full checkpoint leaves it out.
    ``report_every_process=True`` calls ``report`` on every process, not only the main one (with the
    same metrics; the checkpoint folder on the main process only, ``None`` elsewhere): for launchers
    whose report is a barrier across processes (Ray Train's ``ray.train.report``).
    Raises :class:`Diverged` when a loss becomes NaN or infinite.
    """
    from kdseg.data import make_loaders
    from kdseg.distill import alpha_at, phase_for

    run_dir = Path(run_dir) if run_dir is not None else None
    scratch = checkpoint_dir is not None  # Tune copies it: no fsync
    checkpoint_dir = Path(checkpoint_dir) if scratch else run_dir
    t = cfg.train
    seed_everything(t.seed)
    accelerator = make_accelerator(cfg)
    from kdseg.data.class_weights import class_weights_for

    class_weights = class_weights_for(data, cfg.data.class_weights)  # counted once, kept on data
    m = _Models(cfg, data.num_classes, data.ignore_index, class_weights=class_weights)
    if t.channels_last:  # NHWC weights; _train_step converts each batch to match
        for model in (m.student, m.teacher):
            if model is not None:
                model.to(memory_format=torch.channels_last)
    # Sharded first: with N processes an epoch has 1/N of the steps, and the schedules count those.
    train_loader, val_loader = accelerator.prepare(
        *make_loaders(data, cfg.data, t.batch_size, t.num_workers, t.seed)
    )
    steps_per_epoch = len(train_loader)
    if t.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)
    steps_s, steps_t = _update_counts(cfg, steps_per_epoch, m.teacher_trains)

    opt_s = _optimizer(t.optimizer, _student_side(m.student, m.objective), t.lr, t.weight_decay)
    sched_s = _scheduler(t.scheduler, opt_s, steps_s)
    opt_t = sched_t = None
    if m.teacher_trains:
        opt_t = _optimizer(t.optimizer, m.teacher.parameters(), t.teacher_lr or t.lr, t.weight_decay)
        sched_t = _scheduler(t.scheduler, opt_t, steps_t)

    start_epoch, global_step = 0, 0
    if resume is not None:  # every process loads the same checkpoint
        start_epoch, global_step = _restore(resume, cfg, m, opt_s, sched_s, opt_t, sched_t)

    # Prepared (DDP with several processes): the student, a trained teacher and the feature adapters,
    # so that all their gradients are averaged across processes. DDP refuses modules without trainable
    # parameters: a frozen teacher and an objective without conv adapters are only moved.
    student = accelerator.prepare(m.student)
    objective = m.objective.to(accelerator.device)
    if any(p.requires_grad for p in m.objective.parameters()):
        objective = accelerator.prepare(_LossStep(m.objective))
    opt_s = accelerator.prepare(opt_s)
    teacher = m.teacher
    if teacher is not None:
        teacher = accelerator.prepare(teacher) if m.teacher_trains else teacher.to(accelerator.device)
    if opt_t is not None:
        opt_t = accelerator.prepare(opt_t)

    main = accelerator.is_main_process  # the one writer: files, hooks, report, progress
    if run_dir is not None and main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE)
        truncate_metrics(run_dir, keep_epochs=start_epoch)

    last: dict[str, Any] = {}
    for epoch in range(start_epoch, t.epochs):
        seed_everything(_epoch_seed(t.seed, epoch))
        alpha = alpha_at(cfg.distill, epoch, t.epochs)  # distill.alpha_schedule, fixed for the epoch
        m.objective.alpha = alpha
        # shuffle order and augmentations are functions of (seed, epoch): resumed runs see the same batches
        for obj in (train_loader, getattr(train_loader, "dataset", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        student.train()
        if m.teacher_trains:
            teacher.train()
        sums: dict[str, float] = {}
        n_steps, n_images = 0, 0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            phase = phase_for(
                cfg.distill.alternation, epoch, global_step, m.teacher_trains, mode=cfg.distill.mode
            )
            parts = _train_step(accelerator, m, student, teacher, objective, opt_s, opt_t, x, y, phase, t)
            _check_finite(parts, "training", epoch, step)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if phase.update_student:
                sched_s.step()
            if sched_t is not None and phase.update_teacher:
                sched_t.step()
            n_steps += 1
            n_images += x.shape[0]
            global_step += 1
            if on_step is not None and main:
                on_step(step + 1, steps_per_epoch)
        train_time = time.perf_counter() - t0
        sums, n_images = _across_processes(accelerator, sums, n_images)

        for model in (student, teacher if m.teacher_trains else None):  # every rank validates what is saved
            _broadcast_buffers(accelerator, model)
        s_eval = evaluate(student, val_loader, data.num_classes, data.ignore_index, accelerator)
        t_eval = (
            evaluate(teacher, val_loader, data.num_classes, data.ignore_index, accelerator)
            if teacher is not None
            else None
        )
        metrics = _epoch_metrics(epoch, sums, n_steps, s_eval, t_eval, m, opt_s, metric=t.metric)
        metrics["alpha"] = alpha
        metrics["images_per_s"] = n_images / train_time if train_time > 0 else 0.0
        metrics["epoch_time_s"] = time.perf_counter() - t0
        if torch.cuda.is_available():
            metrics["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20

        if hooks and main:
            unwrap = accelerator.unwrap_model
            ctx = EpochContext(
                cfg,
                epoch + 1,
                metrics,
                unwrap(student),
                unwrap(teacher) if teacher is not None else None,
                data,
                accelerator.device,
                run_dir,
            )
            for hook in hooks:
                hook(ctx)

        ckpt_dir = None
        if run_dir is not None and main:
            append_metrics(run_dir, metrics)
            is_last = epoch + 1 == t.epochs
            full = (epoch + 1) % t.checkpoint_every == 0 or is_last
            full = full and (not is_last or keep_last_checkpoint)
            write_student = is_last or (full if student_at is None else epoch + 1 in student_at)
            if full or write_student:
                unwrap = accelerator.unwrap_model
                student_state = {k: v.detach().cpu() for k, v in unwrap(student).state_dict().items()}
            if write_student:
                save_atomic(student_state, run_dir / STUDENT_CHECKPOINT)
            if full:
                state = _state(
                    cfg,
                    epoch + 1,
                    global_step,
                    accelerator,
                    student_state,
                    # a frozen teacher loaded from teacher.checkpoint is rebuilt from it on resume
                    None if not m.teacher_trains and cfg.teacher.checkpoint is not None else teacher,
                    m.objective,
                    opt_s,
                    sched_s,
                    opt_t,
                    sched_t,
                )
                save_atomic(state, checkpoint_dir / FULL_CHECKPOINT, fsync=not scratch, crc32=False)
                ckpt_dir = checkpoint_dir
        if report is not None and (main or report_every_process):
            report(metrics, ckpt_dir)
        last = metrics
    accelerator.wait_for_everyone()  # files written when train_kd returns, on every process
    m.s_taps.close()
    if m.t_taps is not None:
        m.t_taps.close()
    return last


def _train_step(accelerator, m: _Models, student, teacher, objective, opt_s, opt_t, x, y, phase, t) -> dict:
    """One optimisation step of teacher and/or student; returns the loss parts as floats.

    ``objective`` is ``m.objective`` or its prepared :class:`_LossStep`; the loss goes through the
    latter only when the adapters learn this step, since DDP expects a gradient for every parameter
    it wraps after each forward made through it.
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
        accelerator.clip_grad_norm_(_student_side(student, m.objective), t.grad_clip)
        if opt_t is not None:
            accelerator.clip_grad_norm_(teacher.parameters(), t.grad_clip)
    if s_grad:
        opt_s.step()
    if opt_t is not None and phase.update_teacher:
        opt_t.step()
    return out


def _epoch_metrics(
    epoch, sums, n_steps, s_eval, t_eval, m: _Models, opt_s, metric: str = "miou"
) -> dict[str, Any]:
    """The epoch's flat metrics; ``val_miou`` (and student/teacher_val_miou, iou_per_mparam) follow
    ``train.metric``; ``*_val_miou_dataset`` and ``*_val_miou_per_image`` hold both numbers."""

    def mean(key: str) -> float | None:
        return sums[key] / n_steps if key in sums and n_steps else None

    s_miou = s_eval[metric]
    t_miou = t_eval[metric] if t_eval else None

    metrics: dict[str, Any] = {
        "epoch": epoch + 1,
        "train_loss": mean("total"),
        "train_loss_hard": mean("hard"),
        "train_loss_soft": mean("soft"),
        "train_loss_feature": mean("feature"),
        "teacher_train_loss": mean("teacher_total"),
        "student_val_miou": s_miou,
        "val_miou": s_miou,
        "val_miou_dataset": s_eval["miou"],
        "val_miou_per_image": s_eval["per_image_miou"],
        "student_pixel_acc": s_eval["pixel_acc"],
        "student_per_class_iou": s_eval["per_class_iou"],
        "teacher_val_miou": t_miou,
        "teacher_val_miou_dataset": t_eval["miou"] if t_eval else None,
        "teacher_val_miou_per_image": t_eval["per_image_miou"] if t_eval else None,
        "teacher_pixel_acc": t_eval["pixel_acc"] if t_eval else None,
        "teacher_per_class_iou": t_eval["per_class_iou"] if t_eval else None,
        "student_params": m.student_params,
        "teacher_params": m.teacher_params,
        "iou_per_mparam": s_miou / (m.student_params / 1e6),
        "lr": opt_s.param_groups[0]["lr"],
    }
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def _state(
    cfg, epoch, global_step, accelerator, student_state, teacher, objective, opt_s, sched_s, opt_t, sched_t
):
    unwrap = accelerator.unwrap_model
    state = {
        "format": "kdseg-checkpoint-v1",
        "config": config_to_dict(cfg),
        "epoch": epoch,
        "global_step": global_step,
        "student": student_state,
        "objective": unwrap(objective).state_dict(),
        "opt_s": opt_s.state_dict(),
        "sched_s": sched_s.state_dict(),
    }
    if teacher is not None:
        state["teacher"] = {k: v.detach().cpu() for k, v in unwrap(teacher).state_dict().items()}
    if opt_t is not None:
        state["opt_t"] = opt_t.state_dict()
        state["sched_t"] = sched_t.state_dict()
    return state


def _restore(path, cfg, m: _Models, opt_s, sched_s, opt_t, sched_t) -> tuple[int, int]:
    path = Path(path)
    if path.is_dir():
        path = path / FULL_CHECKPOINT
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != "kdseg-checkpoint-v1":
        raise CheckpointError(f"{path}: not a kdseg training checkpoint (no 'format: kdseg-checkpoint-v1')")
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


__all__ = ["Diverged", "Report", "evaluate", "make_accelerator", "train_kd", "config_to_dict"]
