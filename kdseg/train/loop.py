"""``train_kd``: the one training function behind ``kdseg train``, every sweep trial and the tests.

It knows nothing about Ray, W&B or the command line. It gets a validated :class:`KDConfig`, decoded
data (:class:`kdseg.data.SegData`, shared between trials by the sweep) and a ``report`` callable,
and calls ``report(metrics, checkpoint)`` once per epoch with a flat dict of numbers and what the
epoch's full checkpoint write returned (``None`` when no checkpoint was written that epoch). A sweep
passes a function that forwards both to ``tune.report``; the CLI passes one that prints progress.
The step is :mod:`kdseg.train.step`, what the run is built from :mod:`kdseg.train.setup`, validation
:mod:`kdseg.train.validation`, the checkpoint's contents :mod:`kdseg.train.state`.

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

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdseg.checkpoint import Pointer, save_atomic
from kdseg.config import KDConfig, save_config
from kdseg.layout import CONFIG_FILE, FULL_CHECKPOINT, STUDENT_CHECKPOINT, append_metrics, truncate_metrics
from kdseg.train.heap import fix_mmap_threshold
from kdseg.train.setup import (
    Models,
    build_optimizer,
    build_scheduler,
    epoch_seed,
    make_accelerator,
    seed_everything,
    student_side,
    update_counts,
)
from kdseg.train.state import cpu_state, restore, training_state
from kdseg.train.step import (
    LossStep,
    across_processes,
    broadcast_buffers,
    check_finite,
    steps_in_backward,
    train_step,
)
from kdseg.train.validation import epoch_metrics, evaluate

Report = Callable[[dict[str, Any], Any], None]
# (full checkpoint state, 1-based epoch) -> what report gets; default: run_dir/checkpoint.pt rewritten
SaveCheckpoint = Callable[[dict[str, Any], int], Any]


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


def train_kd(
    cfg: KDConfig,
    data,
    report: Report | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | Pointer | None = None,
    on_step: Callable[[int, int], None] | None = None,
    hooks: Sequence[EpochHook] = (),
    keep_last_checkpoint: bool = True,
    report_every_process: bool = False,
    save_checkpoint: SaveCheckpoint | None = None,
    student_at: Collection[int] | None = None,
) -> dict[str, Any]:
    """Train teacher and student together as ``cfg`` says; returns the last epoch's metrics.

    ``data`` is a :class:`kdseg.data.SegData`; ``report(metrics, checkpoint)`` is called after
    every epoch; ``on_step(step, steps_per_epoch)`` after every training step (progress bars);
    each of ``hooks`` gets an :class:`EpochContext` after validation, before the report.
    ``keep_last_checkpoint=False`` skips the full checkpoint after the final epoch (a sweep trial
    that has finished is never resumed); student.pt is always written after the last epoch.
    ``save_checkpoint(state, epoch)`` writes the full checkpoint of (1-based) ``epoch`` and returns what
    ``report`` gets as ``checkpoint``; default: ``run_dir/checkpoint.pt``, rewritten atomically (fsync,
    no zip CRC32s: ``torch.load`` never reads them, and they were most of the write time), its path.
    A sweep trial writes an epoch-named file once and reports a :class:`~kdseg.checkpoint.Pointer` to
    it (:mod:`kdseg.sweep.trainable`); ``resume`` takes such a pointer, or a file or run folder.
    ``student_at``: the (1-based) epochs after which ``student.pt`` is written
    besides the last (a sweep: the epochs at which ASHA can stop the trial); default: with every full
    checkpoint. A teacher that does not train and is loaded from ``teacher.checkpoint`` is rebuilt from
    it on resume, so the full checkpoint leaves it out.
    ``report_every_process=True`` calls ``report`` on every process, not only the main one (with the
    same metrics; the checkpoint on the main process only, ``None`` elsewhere): for launchers
    whose report is a barrier across processes (Ray Train's ``ray.train.report``).
    Raises :class:`Diverged` when a loss becomes NaN or infinite.
    """
    from kdseg.data import make_loaders
    from kdseg.distill import alpha_at, phase_for

    run_dir = Path(run_dir) if run_dir is not None else None
    if save_checkpoint is None and run_dir is not None:
        save_checkpoint = _rewrite(run_dir / FULL_CHECKPOINT)
    t = cfg.train
    fix_mmap_threshold()  # tensors of 4 MiB or more go back to the OS when freed (kdseg/train/heap.py)
    seed_everything(t.seed)
    accelerator = make_accelerator(cfg)
    from kdseg.data.class_weights import class_weights_for

    class_weights = class_weights_for(data, cfg.data.class_weights)  # counted once, kept on data
    m = Models(cfg, data.num_classes, data.ignore_index, class_weights=class_weights)
    if t.channels_last:  # NHWC weights; train_step converts each batch to match
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
    steps_s, steps_t = update_counts(cfg, steps_per_epoch, m.teacher_trains)

    opt_s = build_optimizer(t.optimizer, student_side(m.student, m.objective), t.lr, t.weight_decay)
    sched_s = build_scheduler(t.scheduler, opt_s, steps_s)
    opt_t = sched_t = None
    if m.teacher_trains:
        opt_t = build_optimizer(t.optimizer, m.teacher.parameters(), t.teacher_lr or t.lr, t.weight_decay)
        sched_t = build_scheduler(t.scheduler, opt_t, steps_t)

    start_epoch, global_step = 0, 0
    if resume is not None:  # every process loads the same checkpoint
        start_epoch, global_step = restore(resume, m, opt_s, sched_s, opt_t, sched_t)

    # Prepared (DDP with several processes): the student, a trained teacher and the feature adapters,
    # so that all their gradients are averaged across processes. DDP refuses modules without trainable
    # parameters: a frozen teacher and an objective without conv adapters are only moved.
    student = accelerator.prepare(m.student)
    objective = m.objective.to(accelerator.device)
    if any(p.requires_grad for p in m.objective.parameters()):
        objective = accelerator.prepare(LossStep(m.objective))
    opt_s = accelerator.prepare(opt_s)
    teacher = m.teacher
    if teacher is not None:
        teacher = accelerator.prepare(teacher) if m.teacher_trains else teacher.to(accelerator.device)
    if opt_t is not None:
        opt_t = accelerator.prepare(opt_t)

    # train.optimizer_in_backward: parameters updated inside backward, their gradients never all held at once
    in_backward = steps_in_backward(accelerator, t, (opt_s, opt_t))

    main = accelerator.is_main_process  # the one writer: files, hooks, report, progress
    if run_dir is not None and main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE)
        truncate_metrics(run_dir, keep_epochs=start_epoch)

    last: dict[str, Any] = {}
    try:
        for epoch in range(start_epoch, t.epochs):
            seed_everything(epoch_seed(t.seed, epoch))
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
                parts = train_step(accelerator, m, student, teacher, objective, opt_s, opt_t, x, y, phase, t)
                check_finite(parts, "training", epoch, step)
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
            sums, n_images = across_processes(accelerator, sums, n_images)

            # every rank validates what is saved
            for model in (student, teacher if m.teacher_trains else None):
                broadcast_buffers(accelerator, model)
            s_eval = evaluate(student, val_loader, data.num_classes, data.ignore_index, accelerator)
            t_eval = (
                evaluate(teacher, val_loader, data.num_classes, data.ignore_index, accelerator)
                if teacher is not None
                else None
            )
            metrics = epoch_metrics(epoch, sums, n_steps, s_eval, t_eval, m, opt_s, metric=t.metric)
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

            checkpoint = None
            if run_dir is not None and main:
                append_metrics(run_dir, metrics)
                is_last = epoch + 1 == t.epochs
                full = (epoch + 1) % t.checkpoint_every == 0 or is_last
                full = full and (not is_last or keep_last_checkpoint)
                write_student = is_last or (full if student_at is None else epoch + 1 in student_at)
                if full or write_student:
                    student_state = cpu_state(accelerator.unwrap_model(student))
                if write_student:
                    save_atomic(student_state, run_dir / STUDENT_CHECKPOINT)
                if full:
                    state = training_state(
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
                    checkpoint = save_checkpoint(state, epoch + 1)
                    del state
            if report is not None and (main or report_every_process):
                report(metrics, checkpoint)
            last = metrics
        accelerator.wait_for_everyone()  # files written when train_kd returns, on every process
    finally:  # also when the trial is stopped or fails: no hook keeps the models and optimisers alive
        m.close()
        if in_backward is not None:
            in_backward.close()
    return last


def _rewrite(path: Path) -> SaveCheckpoint:
    """The default ``save_checkpoint``: one file, rewritten atomically every time; report gets its path."""

    def save(state: dict[str, Any], epoch: int) -> Path:
        return save_atomic(state, path, crc32=False)

    return save
