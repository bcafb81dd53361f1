"""``kdseg train CONFIG``: one teacher/student pair, no Ray, with a progress bar."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from kdseg.errors import KdsegError
from kdseg.fileio import require_writable
from kdseg.layout import FULL_CHECKPOINT, STUDENT_CHECKPOINT

# ---------------------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from kdseg.config import load_config

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / "train" / (cfg.name or Path(args.config).stem)
    resume = None
    if (out / FULL_CHECKPOINT).exists():
        if not args.resume:
            raise KdsegError(
                f"{out}: holds a training run already; pass --resume to continue it or choose another --out"
            )
        resume = out / FULL_CHECKPOINT
    elif args.resume:
        raise KdsegError(f"{out}: no {FULL_CHECKPOINT} to resume from")
    require_writable(out, "run")

    from kdseg.data import load_data
    from kdseg.errors import DatasetError

    try:
        data = load_data(cfg.data, progress=True)
    except DatasetError as e:  # name the config the dataset came from too
        raise DatasetError(f"{args.config}: data: {e}") from None
    from rich.console import Console

    console = Console(stderr=True)
    console.print(
        f"[bold]kdseg train[/] {args.config} -> {out}  "
        f"({len(data.train.names)} train / {len(data.val.names)} val images, {data.num_classes} classes)"
    )
    return _run_training(cfg, data, out, resume, console)


def _run_training(cfg, data, out: Path, resume, console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from kdseg.train import Diverged, train_kd

    started = time.perf_counter()
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task("train", total=None, epoch=1, epochs=cfg.train.epochs)

    def on_step(step: int, total: int) -> None:
        progress.update(task, completed=step, total=total)

    def report(m: dict, _ckpt) -> None:
        teacher = (
            f"  teacher mIoU {m['teacher_val_miou']:.3f}" if m.get("teacher_val_miou") is not None else ""
        )
        loss = f"{m['train_loss']:.3f}" if m.get("train_loss") is not None else "-"
        progress.console.print(
            f"epoch {m['epoch']:>3}/{cfg.train.epochs}  loss {loss}  student mIoU {m['val_miou']:.3f}{teacher}"
            f"  {m['images_per_s']:.1f} img/s"
        )
        progress.update(task, epoch=min(m["epoch"] + 1, cfg.train.epochs), completed=0)

    from kdseg.tracking.run import WandbRun

    rank = int(os.environ.get("RANK", "0"))  # accelerate launch / torchrun: one W&B run and summary, rank 0's
    wb = WandbRun(cfg, out, class_names=data.class_names, mode="disabled" if rank else None)
    try:
        with progress, wb:
            last = train_kd(
                cfg, data, wb.wrap(report), run_dir=out, resume=resume, on_step=on_step, hooks=wb.hooks
            )
    except Diverged as e:
        console.print(f"[red]diverged:[/] {e}")
        console.print(wb.describe(), highlight=False, markup=False, soft_wrap=True)
        return 1
    if rank:
        return 0
    console.print(wb.describe(), highlight=False, markup=False, soft_wrap=True)
    took = time.perf_counter() - started
    s = cfg.student
    student = s.arch if s.arch == "lightweight_unet" else f"{s.arch}/{s.encoder}"
    teacher = f" (teacher {last['teacher_val_miou']:.3f})" if last.get("teacher_val_miou") is not None else ""
    if not last:
        print(f"nothing to do: {out} already finished {cfg.train.epochs} epochs")
        return 0
    print(
        f"done: student {student} {last['student_params'] / 1e6:.2f}M params, val mIoU "
        f"{last['val_miou']:.4f}{teacher}, {last['epoch']} epochs in {took:.0f}s -> {out / STUDENT_CHECKPOINT}"
    )
    return 0
