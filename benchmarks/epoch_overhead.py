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

Then, in this process, the checkpoint I/O alone, alternated ``--io-rounds`` times (a busy machine slows
every arm alike), the models' real states (the same pair, after one Adam step) written three ways, each
followed by Ray's own copy into Tune's storage (``ray.train._internal.storage._pyarrow_fs_copy_files``,
what ``persist_current_checkpoint`` calls) of what the trial reported:

- ``586939f`` (before issue 18): ``student.pt`` and ``checkpoint.pt`` into ``run/`` with fsync and zip CRC32s;
  Tune copies all of ``run/``;
- ``scratch`` (06ee444): ``checkpoint.pt`` without fsync or CRC32s into a scratch folder holding it and
  ``metrics.jsonl``; Tune copies the folder (the 444 MB with it);
- ``pointer`` (now): ``checkpoint-eNNNN.pt`` written once into ``run/`` (``kdseg.checkpoint.save_epoch_checkpoint``),
  Tune copies a folder holding ``checkpoint.json`` (the pointer) and ``metrics.jsonl``; the previous file pruned.

``student.pt`` is written only at ASHA's stop epochs since 06ee444, which a non-stop epoch does not write.
Against a tree without pointers, only the first two arms run.

    python benchmarks/epoch_overhead.py [--size 64x64] [--n 64] [--epochs 4] [--teacher resnet34]
        [--student resnet18] [--frozen-teacher] [--io-rounds 5] [--no-sweep] [--out DIR]

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
    import kdseg.sweep.callbacks as kt

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


def checkpoint_io(args, work: Path) -> dict[str, Any]:
    """Per-epoch checkpoint I/O of a sweep trial before and after, alternated (see the module doc)."""
    import shutil

    import torch
    from ray.train._internal.storage import _pyarrow_fs_copy_files

    from kdseg.checkpoint import save_atomic
    from kdseg.config import ModelConfig
    from kdseg.models import build_model

    student = build_model(ModelConfig(arch="Unet", encoder=args.student), 13)
    teacher = build_model(ModelConfig(arch="Unet", encoder=args.teacher), 13)
    opt_s = torch.optim.AdamW(student.parameters())
    opt_t = torch.optim.AdamW(teacher.parameters()) if not args.frozen_teacher else None
    x = torch.randn(2, 3, 64, 64)
    (student(x).mean() + teacher(x).mean()).backward()
    opt_s.step()
    if opt_t is not None:
        opt_t.step()
    run = work / "io" / "run"
    (run / "images").mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n' * 4)
    (run / "config.yaml").write_text("x: 1\n")

    def state(with_teacher: bool) -> dict[str, Any]:
        st = {
            "format": "kdseg-checkpoint-v1",
            "epoch": 2,
            "student": student.state_dict(),
            "opt_s": opt_s.state_dict(),
        }
        if with_teacher:
            st["teacher"] = teacher.state_dict()
        if opt_t is not None:
            st["opt_t"] = opt_t.state_dict()
        return st

    arms = ("586939f", "scratch", "pointer")
    parts: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}

    def tune_copy(src: Path, arm: str, k: int) -> Path:
        dest = work / "io" / f"tune_{arm}_{k}"
        dest.mkdir()  # persist_current_checkpoint: create_dir, then copy
        _pyarrow_fs_copy_files(str(src), str(dest))
        return dest

    def before(k: int) -> float:  # 586939f: student.pt and checkpoint.pt into run/, Tune copies run/
        t = time.perf_counter()
        st = state(True)  # the teacher always, frozen or not
        save_atomic(st["student"], run / "student.pt")
        save_atomic(st, run / "checkpoint.pt")
        t_save = time.perf_counter()
        tune_copy(run, "586939f", k)
        (run / "checkpoint.pt").unlink()
        end = time.perf_counter()
        parts["586939f"].append({"write_s": t_save - t, "tune_copy_s": end - t_save})
        return end - t

    def scratch(k: int) -> float:  # 06ee444: checkpoint.pt into a scratch folder, Tune copies the folder
        t = time.perf_counter()
        folder = work / "io" / "scratch"
        folder.mkdir(exist_ok=True)
        # a frozen teacher is left out only when it comes from teacher.checkpoint; this one is random
        save_atomic(state(not args.frozen_teacher), folder / "checkpoint.pt", fsync=False, crc32=False)
        shutil.copyfile(run / "metrics.jsonl", folder / "metrics.jsonl")
        t_save = time.perf_counter()
        tune_copy(folder, "scratch", k)
        (folder / "checkpoint.pt").unlink()
        end = time.perf_counter()
        parts["scratch"].append({"write_s": t_save - t, "tune_copy_s": end - t_save})
        return end - t

    def pointer(k: int) -> float:  # now: checkpoint-eNNNN.pt once into run/, Tune copies a pointer
        from kdseg.checkpoint import prune_epoch_checkpoints, save_epoch_checkpoint, write_pointer

        t = time.perf_counter()
        ptr = save_epoch_checkpoint(state(not args.frozen_teacher), run, k + 1)
        folder = work / "io" / "pointer"
        folder.mkdir(exist_ok=True)
        write_pointer(folder, ptr)
        shutil.copyfile(run / "metrics.jsonl", folder / "metrics.jsonl")
        t_save = time.perf_counter()
        tune_copy(folder, "pointer", k)
        shutil.rmtree(folder)
        prune_epoch_checkpoints(run, keep=[ptr.path.name])  # the previous epoch's file, as a trial does
        end = time.perf_counter()
        parts["pointer"].append({"write_s": t_save - t, "tune_copy_s": end - t_save})
        return end - t

    def has_pointers() -> bool:
        import kdseg.checkpoint

        return hasattr(kdseg.checkpoint, "save_epoch_checkpoint")

    run_arm = {"586939f": before, "scratch": scratch, "pointer": pointer}
    if not has_pointers():  # a tree before this change: its own two arms
        arms = arms[:2]
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for k in range(args.io_rounds):
        for arm in arms:
            times[arm].append(run_arm[arm](k))
            shutil.rmtree(work / "io" / f"tune_{arm}_{k}", ignore_errors=True)
    size = sum(v.numel() * v.element_size() for v in _tensors(state(True)))
    med = {arm: statistics.median(v) for arm, v in times.items()}
    table(
        [
            "arm",
            *(f"round {k + 1} s" for k in range(args.io_rounds)),
            "median s",
            "write (median)",
            "Tune copy (median)",
        ],
        [
            [
                arm,
                *v,
                med[arm],
                statistics.median(x["write_s"] for x in parts[arm]),
                statistics.median(x["tune_copy_s"] for x in parts[arm]),
            ]
            for arm, v in times.items()
        ],
        f"checkpoint I/O per epoch, alternated: full state {size / 2**20:.0f} MB (UNet-{args.teacher} + UNet-"
        f"{args.student}, AdamW{'; frozen teacher' if args.frozen_teacher else ''})",
    )
    ratios = {
        f"{arm}/{base}": med[arm] / med[base]
        for base in arms
        for arm in arms
        if arms.index(arm) > arms.index(base)
    }
    for name, ratio in ratios.items():
        print(f"checkpoint I/O per epoch, {name}: ratio {ratio:.3f}")
    return {
        "times_s": times,
        "parts": {arm: parts[arm] for arm in arms},
        "median_s": med,
        "ratios": ratios,
        "state_mb": size / 2**20,
    }


def _tensors(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def sweep_part(args, work: Path, stamp: str, seen: list, machine: dict) -> tuple[list, dict]:
    """The real one-trial sweep: per-epoch time outside the epoch (see the module doc)."""
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
    return rows, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=(64, 64))
    p.add_argument("--n", type=int, default=64, help="generated scenes (80/20 train/val)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--teacher", default="resnet34", help="the teacher UNet's encoder")
    p.add_argument("--student", default="resnet18", help="the student UNet's encoder")
    p.add_argument("--frozen-teacher", action="store_true", help="teacher.frozen: true")
    p.add_argument(
        "--io-rounds", type=int, default=5, help="alternated rounds of the checkpoint I/O (0: none)"
    )
    p.add_argument("--no-sweep", action="store_true", help="the checkpoint I/O part only")
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
    summary: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    io = None
    with work_dir(args.out, "kdseg-epoch-overhead-") as work:
        if not args.no_sweep:
            rows, summary = sweep_part(args, work, stamp, seen, machine)
        if args.io_rounds:
            io = checkpoint_io(args, work)
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
            "checkpoint_io": io,
            "total_s": time.perf_counter() - started,
        }
    )


if __name__ == "__main__":
    main()
