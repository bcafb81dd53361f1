"""What a sweep trial spends per epoch outside its epoch: report + checkpoint, measured in a real sweep.

One real kdseg sweep (``kdseg.sweep.driver.plan_sweep`` + ``run_sweep``, in this process) of one
trial (the quickstart pair by default: UNet-ResNet34 teacher -> UNet-ResNet18 student, online KD,
``--n`` generated scenes at ``--size``, batch 8, ``--epochs`` epochs, ``train.checkpoint_every`` 1,
ASHA grace 1 / reduction factor 3). For every epoch, Tune's ``time_this_iter_s`` (the time between two
of the trial's results, recorded in this process by wrapping ``ReportRecoveries.on_trial_result``,
the driver-side callback every kdseg sweep has; nothing in kdseg is changed) minus the epoch's own
``epoch_time_s`` (train + validation, from ``metrics.jsonl``) is what the epoch cost outside its
training and validation: epoch hooks, metrics, student.pt and checkpoint writes, Tune's copy of the
checkpoint into its storage, and the report. The first epoch also holds the trial's set-up and is left
out; the last epoch writes no full checkpoint in a sweep and is reported apart.

    python benchmarks/epoch_overhead.py [--size 64x64] [--n 64] [--epochs 4] [--teacher resnet34]
        [--student resnet18] [--frozen-teacher] [--out DIR]

Prints a table per epoch, the machine and its load, and one JSON line ``{"benchmark": "epoch_overhead", ...}``.
To compare two versions of kdseg, run this script with ``PYTHONPATH`` pointing at each tree in turn,
alternating (A/B/A/B) so that both see the same load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from _common import emit, machine_info, parse_size, print_machine, synth_data, table, work_dir


def write_space(folder: Path, root: Path, args) -> Path:
    h, w = args.size
    base = {
        "data": {"format": "carla", "root": str(root), "image_size": [h, w], "num_classes": 13},
        "teacher": {"arch": "Unet", "encoder": args.teacher, "frozen": args.frozen_teacher},
        "student": {"arch": "Unet", "encoder": args.student},
        "distill": {"mode": "online", "temperature": 4.0, "alpha": 0.5, "sites": ["logits"]},
        "train": {"epochs": args.epochs, "batch_size": 8, "num_workers": 0, "seed": 0},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    space = {
        "base": "base.yaml",
        "space": {"hp": {"grid": [{"distill.alpha": 0.5, "label": "one"}]}},
        "sweep": {
            "num_samples": 1,
            "metric": "val_miou",
            "mode": "max",
            "objective": "val_miou",
            "asha": {"max_t": args.epochs, "grace_period": 1, "reduction_factor": 3},
            "resources_per_trial": {"cpu": 1, "gpu": 0},
            "max_concurrent": 1,
            "seed": 0,
            "max_failures": 0,
        },
        "storage": None,
    }
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def record_results() -> list[dict[str, Any]]:
    """Wrap the driver-side callback's ``on_trial_result`` (this process only); returns the list it fills."""
    import kdseg.sweep.trainable as kt

    seen: list[dict[str, Any]] = []
    original = kt.ReportRecoveries.on_trial_result

    def on_trial_result(self, iteration, trials, trial, result, **info):
        seen.append(
            {
                "epoch": result.get("epoch"),
                "time_this_iter_s": result.get("time_this_iter_s"),
                "epoch_time_s": result.get("epoch_time_s"),
            }
        )
        return original(self, iteration, trials, trial, result, **info)

    kt.ReportRecoveries.on_trial_result = on_trial_result
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=(64, 64))
    p.add_argument("--n", type=int, default=64, help="generated scenes (80/20 train/val)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--teacher", default="resnet34", help="the teacher UNet's encoder")
    p.add_argument("--student", default="resnet18", help="the student UNet's encoder")
    p.add_argument("--frozen-teacher", action="store_true", help="teacher.frozen: true")
    p.add_argument("--out", type=Path, default=None, help="keep data and the sweep folder here")
    args = p.parse_args()
    if args.epochs < 3:
        p.error("--epochs: at least 3 (the first holds the set-up, the last writes no full checkpoint)")

    os.environ.setdefault("WANDB_MODE", "disabled")
    machine = machine_info()
    print_machine(machine)
    import kdseg

    print(f"kdseg from {Path(kdseg.__file__).parent}", flush=True)
    started = time.perf_counter()
    seen = record_results()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with work_dir(args.out, "kdseg-epoch-overhead-") as work:
        root = synth_data(work, n=args.n, size=args.size)
        spaces = work / f"spaces-{stamp}"
        spaces.mkdir()
        from kdseg.sweep.driver import plan_sweep, run_sweep

        plan = plan_sweep(write_space(spaces, root, args), out_root=work / "runs", name=f"overhead-{stamp}")
        result = run_sweep(plan)
        import ray

        machine["ray"] = ray.__version__
        ray.shutdown()
        ckpt_bytes = sum(
            f.stat().st_size for f in (result.sweep_dir / "tune").rglob("checkpoint_*/*") if f.is_file()
        )

    rows = []
    for r in seen:
        if r["time_this_iter_s"] is None or r["epoch_time_s"] is None:
            continue
        rows.append({**r, "outside_s": r["time_this_iter_s"] - r["epoch_time_s"]})
    middle = [r for r in rows if r["epoch"] not in (1, args.epochs)]
    last = [r for r in rows if r["epoch"] == args.epochs]
    table(
        ["epoch", "iteration s", "epoch (train + val) s", "outside the epoch s", "fraction of the epoch"],
        [
            [
                r["epoch"],
                r["time_this_iter_s"],
                r["epoch_time_s"],
                r["outside_s"],
                r["outside_s"] / r["epoch_time_s"],
            ]
            for r in rows
        ],
        f"one trial, {args.size[0]}x{args.size[1]}, {args.n} scenes, UNet-{args.teacher} -> UNet-{args.student}"
        f"{' (frozen teacher)' if args.frozen_teacher else ''}, {args.epochs} epochs",
    )
    summary: dict[str, Any] = {}
    if middle:
        summary = {
            "overhead_per_epoch_s": statistics.median(r["outside_s"] for r in middle),
            "epoch_s": statistics.median(r["epoch_time_s"] for r in middle),
        }
        summary["overhead_fraction"] = summary["overhead_per_epoch_s"] / summary["epoch_s"]
    if last:
        summary["overhead_last_epoch_s"] = last[0]["outside_s"]
    summary["tune_checkpoint_mb_left"] = ckpt_bytes / 2**20
    if middle:
        print(
            f"\nper epoch (epochs 2..{args.epochs - 1}, median): {summary['overhead_per_epoch_s']:.2f} s outside "
            f"an epoch of {summary['epoch_s']:.2f} s = {summary['overhead_fraction']:.1%}; last epoch "
            f"{summary.get('overhead_last_epoch_s', float('nan')):.2f} s"
        )
    emit(
        {
            "benchmark": "epoch_overhead",
            "command": " ".join(["python", "benchmarks/epoch_overhead.py", *sys.argv[1:]]),
            "machine": machine,
            "kdseg": str(Path(kdseg.__file__).parent),
            "settings": {
                "size": list(args.size),
                "n": args.n,
                "epochs": args.epochs,
                "teacher": args.teacher,
                "student": args.student,
                "frozen_teacher": args.frozen_teacher,
            },
            "epochs": rows,
            "summary": summary,
            "total_s": time.perf_counter() - started,
        }
    )


if __name__ == "__main__":
    main()
