"""Does distillation help? The same student trained alone and with KD, same budget, several seeds.

Two arms per seed, everything else identical (data, resolution, epochs, optimiser, seed):

- ``kd``: the config as written (e.g. online KD from a ResNet34 teacher);
- ``alone``: the same config with ``distill.mode=none`` (the student trains on labels only).

Each run goes to ``OUT/<arm>/seed<N>`` through :func:`kdseg.train.train_kd` (the function every
trial uses). A run that has finished is not repeated, so an interrupted comparison continues
where it stopped. Prints a table (mean +- sample std of the final val mIoU per arm) and writes
``OUT/results.json``.

    python experiments/kd_benefit.py experiments/camvid_online_r34_r18.yaml \\
        --seeds 0 1 2 --out runs/kd_benefit/camvid \\
        --set data.root=../shared/data/camvid data.image_size=[128,160] train.epochs=12 \\
              teacher.weights=null student.weights=null train.num_workers=0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ARMS = {"kd": [], "alone": ["distill.mode=none"]}


def run_arm(config: str, overrides: list[str], arm: str, seed: int, out: Path, data) -> dict:
    from kdseg.config import load_config, save_config
    from kdseg.layout import read_metrics
    from kdseg.train import train_kd

    cfg = load_config(config, [*overrides, *ARMS[arm], f"train.seed={seed}", "tracking.wandb.mode=disabled"])
    run_dir = out / arm / f"seed{seed}"
    done = read_metrics(run_dir) if (run_dir / "student.pt").exists() else []
    if done and done[-1]["epoch"] == cfg.train.epochs:
        print(f"{arm} seed {seed}: finished earlier, val mIoU {done[-1]['val_miou']:.4f}", flush=True)
        return done[-1]
    resume = run_dir / "checkpoint.pt" if (run_dir / "checkpoint.pt").exists() else None
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    started = time.perf_counter()

    def report(metrics, _checkpoint_dir=None):
        print(
            f"{arm} seed {seed} epoch {metrics['epoch']}/{cfg.train.epochs}: "
            f"student val mIoU {metrics['val_miou']:.4f}"
            + (f", teacher {metrics['teacher_val_miou']:.4f}" if metrics.get("teacher_val_miou") else "")
            + f" ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

    return train_kd(cfg, data, report, run_dir=run_dir, resume=resume)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/kd_benefit")
    p.add_argument(
        "--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="arms to run (default: both)"
    )
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    from kdseg.config import load_config
    from kdseg.data import load_data

    out = Path(args.out)
    base = load_config(args.config, args.overrides)
    data = load_data(base.data, progress=True)
    results: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            m = run_arm(args.config, args.overrides, arm, seed, out, data)
            results[arm].append(
                {
                    "seed": seed,
                    "val_miou": m["val_miou"],
                    "teacher_val_miou": m.get("teacher_val_miou"),
                    "student_params": m.get("student_params"),
                }
            )

    summary = {}
    print(f"\n{'arm':<8}{'seeds':>6}{'val mIoU mean':>16}{'std':>9}   per seed")
    for arm, rows in results.items():
        vals = [r["val_miou"] for r in rows]
        mean = statistics.fmean(vals)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        summary[arm] = {"mean": mean, "std": std, "runs": rows}
        print(f"{arm:<8}{len(vals):>6}{mean:>16.4f}{std:>9.4f}   " + " ".join(f"{v:.4f}" for v in vals))
    delta = summary["kd"]["mean"] - summary["alone"]["mean"] if len(summary) == len(ARMS) else None
    if delta is not None:
        print(f"KD - alone: {delta:+.4f} mIoU")
    record = {
        "config": args.config,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "delta": delta,
        **summary,
    }
    (out / "results.json").write_text(json.dumps(record, indent=2))
    print(
        json.dumps(
            {k: record[k] for k in ("config", "seeds", "delta")} | {a: summary[a]["mean"] for a in args.arms}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
