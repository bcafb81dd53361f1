"""N students from one teacher: a sweep with a teacher stage against N online-KD trials.

Two real kdseg sweeps (``kdseg.sweep.plan_sweep`` + ``run_sweep``, one Ray session) over the same N
students (a ``grid`` of N temperatures, so both arms run exactly N trials, none stopped early):

- ``stage``: ``distill.mode: offline`` with ``teacher.checkpoint: train``: the teacher is trained once
  (``--teacher-epochs``, default ``--epochs``), then each trial trains only its student against the
  frozen teacher (one teacher forward pass per step);
- ``online``: ``distill.mode: online``: every trial trains its own copy of the same teacher beside
  its student, as a sweep without a teacher stage does.

Reported per arm: sweep wall time (``run_sweep``, Ray start-up excluded: Ray is started before both),
the trials' own seconds (the sum of every epoch's train + validation time in their metrics.jsonl),
the teacher's seconds, and how many times a teacher was trained. The ratio ``stage / online`` of wall
times is the figure; the expected one, from the measured epoch times, is
``(teacher + N offline students) / (N online trials)``: about ``(T + N S) / (N (T + S))`` for a teacher
that costs T per epoch and a student S, i.e. ``1/N`` of the teacher's cost plus the students'.

    python benchmarks/teacher_stage.py [--students 4] [--epochs 3] [--teacher-epochs E] [--steps 4]
        [--size 64x64] [--n 48] [--teacher Unet/resnet34] [--concurrency 1] [--out DIR]

Prints a table, the machine and its load, and one JSON line ``{"benchmark": "teacher_stage", ...}``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from _common import (
    emit,
    machine_info,
    parse_size,
    print_machine,
    synth_data,
    table,
    timed_sweep,
    trial_epochs,
    work_dir,
)


def write_space(folder: Path, root: Path, args, arm: str) -> Path:
    h, w = args.size
    arch, _, encoder = args.teacher.partition("/")
    teacher: dict[str, Any] = {"arch": arch, "encoder": encoder or "resnet34", "width": 1.0}
    if arm == "stage":
        teacher.update(checkpoint="train", train_epochs=args.teacher_epochs or args.epochs)
    base = {
        "data": {
            "format": "carla",
            "root": str(root),
            "image_size": [h, w],
            "num_classes": 13,
            "augment": {"enabled": False},
        },
        "teacher": teacher,
        "student": {"arch": "lightweight_unet", "width": 0.5},
        "distill": {"mode": "offline" if arm == "stage" else "online", "alpha": 0.5, "sites": ["logits"]},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch,
            "num_workers": 0,
            "seed": 0,
            "max_steps_per_epoch": args.steps,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    (folder / f"{arm}_base.yaml").write_text(yaml.safe_dump(base))
    space = {
        "base": f"{arm}_base.yaml",
        "space": {"distill.temperature": {"grid": [float(1 + i) for i in range(args.students)]}},
        "sweep": {
            "num_samples": args.students,
            "objective": "val_miou",
            "quality_floor": 0.0,
            "asha": {"max_t": args.epochs, "grace_period": args.epochs, "reduction_factor": 2},
            "resources_per_trial": {"cpu": 1, "gpu": 0},
            "max_concurrent": args.concurrency,
            "seed": 0,
        },
    }
    path = folder / f"{arm}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def run_arm(arm: str, space: Path, out_root: Path) -> dict[str, Any]:
    from kdseg.layout import read_metrics, teacher_dir
    from kdseg.sweep.teacher_stage import read_teachers

    plan, result, wall = timed_sweep(arm, space, out_root)
    trials = []
    for row in result.leaderboard:
        epochs = trial_epochs(row)
        trials.append(
            {
                "trial_id": row["trial_id"],
                "status": row["status"],
                "epochs": len(epochs),
                "val_miou": row.get("val_miou"),
                "teacher_val_miou": row.get("teacher_val_miou"),
                "trial_s": sum(e.get("epoch_time_s", 0.0) for e in epochs),
            }
        )
    teachers = read_teachers(plan.sweep_dir)
    teacher_s = sum(
        e.get("epoch_time_s", 0.0)
        for s in teachers
        for e in read_metrics(teacher_dir(plan.sweep_dir, s["hash"]))
    )
    return {
        "arm": arm,
        "wall_s": wall,
        "trials": trials,
        "teacher_trainings": len(teachers) if arm == "stage" else len(trials),
        "teacher_s": teacher_s,
        "trial_s_total": sum(t["trial_s"] for t in trials),
        "compute_s": teacher_s + sum(t["trial_s"] for t in trials),
        "statuses": {s: sum(t["status"] == s for t in trials) for s in {t["status"] for t in trials}},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", type=int, default=4, help="N: students (trials) per arm")
    p.add_argument("--epochs", type=int, default=3, help="epochs of every student (and online teacher)")
    p.add_argument(
        "--teacher-epochs", type=int, default=None, help="the stage teacher's epochs (default --epochs)"
    )
    p.add_argument("--steps", type=int, default=4, help="training steps per epoch")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=parse_size, default=(64, 64))
    p.add_argument("--n", type=int, default=48, help="generated scenes")
    p.add_argument("--teacher", default="Unet/resnet34", help="ARCH/ENCODER of the teacher")
    p.add_argument("--concurrency", type=int, default=1, help="trials at a time (1: wall time = compute)")
    p.add_argument(
        "--out", type=Path, default=None, help="keep the sweeps here (default: a temporary folder)"
    )
    args = p.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")

    import ray

    from kdseg.sweep.driver import _init_ray

    info = machine_info()
    with work_dir(args.out, "kdseg-teacher-stage-") as work:
        root = synth_data(work, args.n, args.size)
        _init_ray(None, verbose=False)
        info = machine_info()  # with Ray's version
        print_machine(info)
        arms = {
            arm: run_arm(arm, write_space(work, root, args, arm), work / "sweeps")
            for arm in ("stage", "online")
        }
        ray.shutdown()
    stage, online = arms["stage"], arms["online"]
    table(
        [
            "arm",
            "trials",
            "teacher trainings",
            "teacher s",
            "trials s",
            "compute s",
            "wall s",
            "mean val mIoU",
        ],
        [
            [
                a["arm"],
                len(a["trials"]),
                a["teacher_trainings"],
                a["teacher_s"],
                a["trial_s_total"],
                a["compute_s"],
                a["wall_s"],
                sum(t["val_miou"] or 0.0 for t in a["trials"]) / max(1, len(a["trials"])),
            ]
            for a in (stage, online)
        ],
        f"{args.students} students from one teacher ({args.teacher}, {args.teacher_epochs or args.epochs} "
        f"teacher epochs; students lightweight_unet@0.5, {args.epochs} epochs of {args.steps} steps, "
        f"{args.size[0]}x{args.size[1]}, {args.concurrency} trial(s) at a time)",
    )
    ratio = stage["wall_s"] / online["wall_s"] if online["wall_s"] else None
    expected = stage["compute_s"] / online["compute_s"] if online["compute_s"] else None
    print(f"\nwall time stage / online: {ratio:.3f} (from the trials' own epoch times: {expected:.3f})")
    emit(
        {
            "benchmark": "teacher_stage",
            "machine": info,
            "settings": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k != "out"
            },
            "stage": stage,
            "online": online,
            "ratio": ratio,
            "compute_ratio": expected,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
