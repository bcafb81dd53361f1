"""Does distillation help? The same student alone, with offline KD and with online KD, several seeds.

Arms, per seed, everything else identical (data, resolution, student epochs, optimiser, seed):

- ``alone``: ``distill.mode=none`` (the student trains on labels only);
- ``offline``: KD from a frozen teacher trained ONCE before the students, by the function a sweep's
  teacher stage uses (:func:`kdseg.sweep.teacher_stage.train_teacher`: ``teacher.train_epochs`` epochs,
  ``train.teacher_lr``; the config's ``train.seed``) into ``OUT/teacher/<hash>/``; needs
  ``teacher.checkpoint: train`` in the config (e.g. ``experiments/camvid_kd_benefit.yaml``);
- ``online``: teacher and student trained together from scratch, the student's epochs;
- ``kd``: the config as written (for configs without a teacher stage, e.g. online ones).

Default arms: ``alone offline online`` when the config says ``teacher.checkpoint: train``, else
``kd alone``. Each run goes to ``OUT/<arm>/seed<N>`` through :func:`kdseg.train.train_kd` (the
function every sweep trial uses); a run or teacher that has finished is not repeated, so an
interrupted comparison continues where it stopped. Prints a table (mean +- sample std of the final
val mIoU per arm, and each arm minus ``alone``) and the teacher's val mIoU, and writes
``OUT/results.json`` (every run's ``config.yaml`` and ``student.pt`` path, the teacher's).

``--preset cpu2h`` is the budget experiments/README.md reports (96x128, a lightweight UNet x0.5 student for
8 epochs, the UNet-ResNet34 teacher for 30; about 2 hours of a 2-core CPU shared with other work);
``--set`` options come after a preset and win. Seeds may run in separate processes (``--seeds 1``,
``--seeds 2`` at once, same ``--out``); a last run with every seed then only collects the table.

    OMP_NUM_THREADS=1 python experiments/kd_benefit.py experiments/camvid_kd_benefit.yaml --preset cpu2h \\
        --seeds 0 1 2 --out runs/kd_benefit/camvid_cpu2h --set data.root=../shared/data/camvid
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ARMS = {
    "kd": [],
    "alone": ["distill.mode=none"],
    "online": ["distill.mode=online", "teacher.checkpoint=null", "teacher.train_epochs=null"],
    "offline": ["distill.mode=offline"],  # teacher.checkpoint: the teacher trained once (below)
}
# Budgets for a 2-core CPU (3 seeds x 3 arms + the teacher). cpu2h was run for experiments/README.md;
# cpu60 is the same recipe with fewer epochs and a wider student (not measured)
PRESETS = {
    "cpu2h": [
        "data.image_size=[96,128]",
        "student.width=0.5",
        "train.epochs=8",
        "teacher.train_epochs=30",
        "train.num_workers=0",
        "train.device=cpu",
    ],
    "cpu60": [
        "data.image_size=[96,128]",
        "train.epochs=6",
        "teacher.train_epochs=18",
        "train.num_workers=0",
        "train.device=cpu",
    ],
}


def _say(text: str) -> None:
    print(text, flush=True)


def _progress(who: str, epochs: int):
    started = time.perf_counter()

    def report(metrics, _checkpoint_dir=None):
        teacher = metrics.get("teacher_val_miou")
        _say(
            f"{who} epoch {metrics['epoch']}/{epochs}: val mIoU {metrics['val_miou']:.4f}"
            + (f", teacher {teacher:.4f}" if teacher is not None else "")
            + f" ({time.perf_counter() - started:.0f} s)"
        )

    return report


def train_teacher_once(cfg, data, out: Path) -> dict:
    """The offline arm's teacher: trained once (or found finished) under ``OUT/teacher/<hash>/``."""
    from kdseg.config import config_to_dict
    from kdseg.sweep.teacher_plan import teacher_config
    from kdseg.sweep.teacher_stage import read_summary, train_teacher

    tcfg = teacher_config(cfg)
    folder = out / "teacher" / tcfg.name.removeprefix("teacher-")
    summary = read_summary(folder)
    if summary is not None:
        _say(f"teacher: finished earlier, val mIoU {summary['val_miou']:.4f} ({folder})")
        return summary
    _say(f"teacher: {tcfg.student.arch}/{tcfg.student.encoder}, {tcfg.train.epochs} epochs -> {folder}")
    summary = train_teacher(
        config_to_dict(tcfg), data, str(folder), report=_progress("teacher", tcfg.train.epochs)
    )
    _say(f"teacher: val mIoU {summary['val_miou']:.4f} after {summary['epochs']} epochs")
    return summary


def run_arm(config: str, overrides: list[str], arm: str, seed: int, out: Path, data, teacher=None) -> dict:
    from kdseg.config import load_config
    from kdseg.layout import read_metrics
    from kdseg.train import train_kd

    extra = [*ARMS[arm], f"train.seed={seed}", "tracking.wandb.mode=disabled"]
    if arm == "offline":
        extra += [f"teacher.checkpoint={teacher['checkpoint']}", "teacher.train_epochs=null"]
    cfg = load_config(config, [*overrides, *extra])
    run_dir = out / arm / f"seed{seed}"
    done = read_metrics(run_dir) if (run_dir / "student.pt").exists() else []
    if done and done[-1]["epoch"] == cfg.train.epochs:
        _say(f"{arm} seed {seed}: finished earlier, val mIoU {done[-1]['val_miou']:.4f}")
        return done[-1]
    resume = run_dir / "checkpoint.pt" if (run_dir / "checkpoint.pt").exists() else None
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    last = train_kd(
        cfg, data, _progress(f"{arm} seed {seed}", cfg.train.epochs), run_dir=run_dir, resume=resume
    )
    _say(f"{arm} seed {seed}: {time.perf_counter() - started:.0f} s")
    return last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/kd_benefit")
    p.add_argument(
        "--arms", nargs="+", choices=list(ARMS), default=None, help="arms to run (default: see above)"
    )
    p.add_argument("--preset", choices=list(PRESETS), default=None, help="a budget (overrides before --set)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    from kdseg.config import TRAIN_TEACHER, load_config
    from kdseg.data import load_data

    out = Path(args.out)
    overrides = [*PRESETS.get(args.preset, []), *args.overrides]
    base = load_config(args.config, overrides)
    stage = base.teacher.checkpoint == TRAIN_TEACHER
    arms = args.arms or (["alone", "offline", "online"] if stage else ["kd", "alone"])
    if "offline" in arms and not stage:
        p.error(f"--arms offline: {args.config} has no teacher.checkpoint: train (the teacher to train once)")
    if "kd" in arms and stage:
        p.error("--arms kd: with teacher.checkpoint: train, choose offline (and online) instead")
    data = load_data(base.data, progress=True)
    teacher = train_teacher_once(base, data, out) if "offline" in arms else None

    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    for seed in args.seeds:
        for arm in arms:
            m = run_arm(args.config, overrides, arm, seed, out, data, teacher)
            run_dir = out / arm / f"seed{seed}"
            results[arm].append(
                {
                    "seed": seed,
                    "val_miou": m["val_miou"],
                    "teacher_val_miou": m.get("teacher_val_miou"),
                    "student_params": m.get("student_params"),
                    "config": str(run_dir / "config.yaml"),
                    "student_pt": str(run_dir / "student.pt"),
                }
            )

    summary = {}
    print(f"\n{'arm':<8}{'seeds':>6}{'val mIoU mean':>16}{'std':>9}{'- alone':>9}   per seed")
    for arm, rows in results.items():
        vals = [r["val_miou"] for r in rows]
        summary[arm] = {
            "mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "runs": rows,
        }
    for arm, s in summary.items():
        delta = s["mean"] - summary["alone"]["mean"] if "alone" in summary and arm != "alone" else None
        s["delta_vs_alone"] = delta
        shown = f"{delta:+9.4f}" if delta is not None else f"{'-':>9}"
        vals = " ".join(f"{r['val_miou']:.4f}" for r in s["runs"])
        print(f"{arm:<8}{len(s['runs']):>6}{s['mean']:>16.4f}{s['std']:>9.4f}{shown}   {vals}")
    if teacher is not None:
        print(
            f"offline teacher ({teacher['teacher']}, {teacher['epochs']} epochs, trained once): val mIoU "
            f"{teacher['val_miou']:.4f} -> {teacher['checkpoint']}"
        )
    online = [
        r["teacher_val_miou"]
        for r in results.get("online", []) + results.get("kd", [])
        if r["teacher_val_miou"]
    ]
    if online:
        print("online teachers' val mIoU: " + " ".join(f"{v:.4f}" for v in online))
    kd_arm = "kd" if "kd" in summary else "offline" if "offline" in summary else None
    delta = summary[kd_arm]["delta_vs_alone"] if kd_arm else None
    record = {
        "config": args.config,
        "preset": args.preset,
        "overrides": overrides,
        "seeds": args.seeds,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "teacher": teacher,
        "delta": delta,
        **summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(record, indent=2))
    print(
        json.dumps(
            {"config": args.config, "seeds": args.seeds, "delta": delta}
            | {a: summary[a]["mean"] for a in arms}
            | ({"teacher": teacher["val_miou"]} if teacher else {})
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
