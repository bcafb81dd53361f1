"""Images/s the data loader delivers at trial settings, against images/s the training step consumes.

The data are generated road scenes (carla layout) at twice ``--size``, decoded once into memory by
``kdseg.data.load_data`` (the decoded cache every trial shares); augmentation is the experiments'
(random resized crop, flip, colour jitter, ImageNet normalisation). Three measurements, one process:

The generated scenes' generation time is printed first (``synth_generate_s`` in the JSON line).

1. ``loader``: ``kdseg.data.make_loaders`` + ``accelerator.prepare`` (exactly what ``train_kd`` builds)
   iterated alone for each ``--workers`` setting: images/s delivered, and the first batch's latency
   (worker start) separately.
2. ``step``: kdseg's training step (``kdseg.train.step.train_step``: online KD, r34 -> r18 unless
   ``--teacher``/``--student`` say otherwise) on one batch already in memory: images/s consumed.
3. ``loop``: the two together as in ``train_kd`` for each ``--workers`` setting: the time spent
   waiting for the next batch (``next(loader)``), per step and as a fraction of the loop. The first
   batch of the epoch (worker start-up; paid once per trial with persistent workers) is reported
   apart. The step must never wait for data: target wait fraction (after the first batch) <= 0.01.

    python benchmarks/data.py [--size 128x128] [--batch 8] [--workers 0,2] [--steps 12] [--device cpu]

Prints tables, the machine and its load, and one JSON line ``{"benchmark": "data", ...}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, machine_info, parse_size, print_machine, synth_data, table

WAIT_TARGET = 0.01


def build_cfg(args, root: Path, workers: int):
    from kdseg.config import KDConfig

    h, w = args.size
    return KDConfig.model_validate(
        {
            "data": {
                "format": "carla",
                "root": str(root),
                "image_size": [h, w],
                "num_classes": 13,
                "augment": {"enabled": True, "mode": "crop", "hflip": 0.5, "color_jitter": 0.3},
            },
            "teacher": {"arch": "Unet", "encoder": args.teacher},
            "student": {"arch": "Unet", "encoder": args.student},
            "distill": {"mode": "online", "temperature": 4.0, "alpha": 0.5, "sites": ["logits"]},
            "train": {
                "batch_size": args.batch,
                "num_workers": workers,
                "device": args.device,
                "amp": "off" if args.device == "cpu" else "auto",
                "seed": 0,
            },
            "tracking": {"wandb": {"mode": "disabled"}},
        }
    )


def loaders(cfg, data):
    from kdseg.data import make_loaders
    from kdseg.train import make_accelerator

    acc = make_accelerator(cfg)
    t = cfg.train
    train, _ = make_loaders(data, cfg.data, t.batch_size, t.num_workers, t.seed)
    return acc, acc.prepare(train)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_loader(cfg, data, epochs: int) -> dict[str, Any]:
    acc, train = loaders(cfg, data)
    t0 = time.perf_counter()
    first = None
    images = 0
    start_rest = None
    for _ in range(epochs):
        for x, _y in train:
            if first is None:
                first = time.perf_counter() - t0
                start_rest = time.perf_counter()
                continue
            images += x.shape[0]
    sync(acc.device)
    rest = time.perf_counter() - start_rest
    del train
    return {
        "workers": cfg.train.num_workers,
        "first_batch_s": first,
        "images": images,
        "seconds": rest,
        "images_per_s": images / rest if rest > 0 else float("inf"),
    }


def make_step(cfg, data):
    """kdseg's step for ``cfg`` (its accelerator, models, objective, optimisers)."""
    from kdseg.distill import phase_for
    from kdseg.train import make_accelerator
    from kdseg.train.setup import Models, build_optimizer
    from kdseg.train.step import train_step

    acc = make_accelerator(cfg)
    m = Models(cfg, data.num_classes, data.ignore_index)
    opt_s = build_optimizer("adamw", [*m.student.parameters(), *m.objective.parameters()], 1e-3, 1e-4)
    opt_t = build_optimizer("adamw", m.teacher.parameters(), 1e-3, 1e-4)
    student, teacher = acc.prepare(m.student), acc.prepare(m.teacher)
    objective = m.objective.to(acc.device)
    opt_s, opt_t = acc.prepare(opt_s, opt_t)
    phase = phase_for("none", 0, 0, True, mode="online")

    def step(x, y):
        train_step(acc, m, student, teacher, objective, opt_s, opt_t, x, y, phase, cfg.train)

    return acc, step


def measure_step(step, acc, x, y, steps: int) -> dict[str, Any]:
    for _ in range(2):
        step(x, y)
    sync(acc.device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step(x, y)
        sync(acc.device)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"steps": steps, "step_s_median": med, "images_per_s": x.shape[0] / med}


def measure_loop(cfg, data, step, steps: int) -> dict[str, Any]:
    acc, train = loaders(cfg, data)
    it = iter(train)
    waits, steps_s = [], []
    done = 0
    t_first = time.perf_counter()
    x, y = next(it)
    first = time.perf_counter() - t_first
    step(x, y)  # warm-up step on the first batch, not timed
    t_loop = time.perf_counter()
    while done < steps:
        t = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:  # next epoch: the same persistent workers start on it
            it = iter(train)
            x, y = next(it)
        t1 = time.perf_counter()
        step(x, y)
        sync(acc.device)
        t2 = time.perf_counter()
        waits.append(t1 - t)
        steps_s.append(t2 - t1)
        done += 1
    loop_s = time.perf_counter() - t_loop
    del it, train
    return {
        "workers": cfg.train.num_workers,
        "first_batch_s": first,
        "steps": steps,
        "loop_s": loop_s,
        "wait_total_s": sum(waits),
        "wait_per_step_ms_mean": statistics.mean(waits) * 1e3,
        "wait_per_step_ms_max": max(waits) * 1e3,
        "step_s_median": statistics.median(steps_s),
        "wait_fraction": sum(waits) / loop_s,
        "images_per_s": steps * cfg.train.batch_size / loop_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=(128, 128), help="training image size HxW")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n", type=int, default=64, help="generated training+validation images")
    p.add_argument("--workers", default="0,2", help="loader worker counts to compare (trial default: 2)")
    p.add_argument("--steps", type=int, default=12, help="timed steps for the step and loop measurements")
    p.add_argument("--loader-epochs", type=int, default=3, help="passes over the data for the loader alone")
    p.add_argument("--teacher", default="resnet34")
    p.add_argument("--student", default="resnet18")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", type=Path, default=None, help="keep the generated data here")
    args = p.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    workers = [int(v) for v in args.workers.split(",") if v.strip()]
    os.environ.setdefault("WANDB_MODE", "disabled")
    machine = machine_info(args.device)
    print_machine(machine)
    started = time.perf_counter()

    from kdseg.data import load_data

    h, w = args.size
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="kdseg-bench-data-")
        work = Path(tmp.name)
    else:
        work = args.out.resolve()
        work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        root = synth_data(work, n=args.n, size=(2 * h, 2 * w))
        synth_s = time.perf_counter() - t
        print(
            f"data: {args.n} scenes of {2 * h}x{2 * w} generated in {synth_s:.2f} s "
            f"({args.n / synth_s:.0f} images/s; reused as they are when --out already holds them)",
            flush=True,
        )
        cfg0 = build_cfg(args, root, workers[0])
        t = time.perf_counter()
        data = load_data(cfg0.data)
        decode_s = time.perf_counter() - t
        print(
            f"data: {len(data.train)} train / {len(data.val)} val images decoded once in {decode_s:.2f} s "
            f"({data.nbytes() / 2**20:.1f} MB in memory); batch {args.batch} at {h}x{w}, {args.device}",
            flush=True,
        )

        loader_rows = [measure_loader(build_cfg(args, root, k), data, args.loader_epochs) for k in workers]
        acc, step = make_step(cfg0, data)
        _, train = loaders(cfg0, data)
        x, y = next(iter(train))
        del train
        step_row = measure_step(step, acc, x, y, args.steps)
        loop_rows = [measure_loop(build_cfg(args, root, k), data, step, args.steps) for k in workers]
    finally:
        if tmp is not None:
            tmp.cleanup()

    consumed = step_row["images_per_s"]
    table(
        ["workers", "images/s delivered", "x step's need", "first batch s"],
        [
            [r["workers"], r["images_per_s"], r["images_per_s"] / consumed, r["first_batch_s"]]
            for r in loader_rows
        ],
        f"Loader alone (train loader of train_kd, augmentation on, {args.loader_epochs} passes)",
    )
    table(
        ["step", "s/step (median)", "images/s consumed"],
        [[f"online KD {args.teacher} -> {args.student}", step_row["step_s_median"], consumed]],
        "Training step alone (batch in memory)",
    )
    table(
        ["workers", "images/s", "step s", "wait ms/step", "wait max ms", "wait fraction", "first batch s"],
        [
            [
                r["workers"],
                r["images_per_s"],
                r["step_s_median"],
                r["wait_per_step_ms_mean"],
                r["wait_per_step_ms_max"],
                r["wait_fraction"],
                r["first_batch_s"],
            ]
            for r in loop_rows
        ],
        f"Loader feeding the step ({args.steps} steps after the first batch; target wait fraction <= {WAIT_TARGET})",
    )
    trial = next((r for r in loop_rows if r["workers"] == 2), loop_rows[-1])
    summary = {
        "step_images_per_s": consumed,
        "loader_images_per_s": {str(r["workers"]): r["images_per_s"] for r in loader_rows},
        "loader_over_step": {str(r["workers"]): r["images_per_s"] / consumed for r in loader_rows},
        "wait_fraction": {str(r["workers"]): r["wait_fraction"] for r in loop_rows},
        # > 1: the loader's workers slow the step down by competing for the CPU cores
        "step_slowdown_with_loader": {
            str(r["workers"]): r["step_s_median"] / step_row["step_s_median"] for r in loop_rows
        },
        "trial_workers": trial["workers"],
        "target_wait_fraction": WAIT_TARGET,
        "target_met": trial["wait_fraction"] <= WAIT_TARGET,
    }
    print(
        f"\nat trial settings ({trial['workers']} workers) the step waits {trial['wait_fraction']:.2%} of the "
        f"time for data (target <= {WAIT_TARGET:.0%}): {'met' if summary['target_met'] else 'NOT met'}"
    )
    slow = summary["step_slowdown_with_loader"]
    print(
        "median step with the loader running vs alone: "
        + ", ".join(f"{k} workers x{v:.2f}" for k, v in slow.items())
        + " (on a CPU, loader workers compete with the step's threads for the cores)"
    )
    emit(
        {
            "benchmark": "data",
            "command": " ".join(["python", "benchmarks/data.py", *sys.argv[1:]]),
            "machine": machine,
            "settings": {
                "size": [h, w],
                "batch": args.batch,
                "device": args.device,
                "teacher": args.teacher,
                "student": args.student,
                "synth_generate_s": synth_s,
                "decode_s": decode_s,
                "train_images": len(data.train),
            },
            "summary": summary,
            "loader": loader_rows,
            "step": step_row,
            "loop": loop_rows,
            "total_s": time.perf_counter() - started,
        }
    )


if __name__ == "__main__":
    main()
