"""ASHA against running every trial to max_t: compute used and best val_miou, same space, same seed.

Two real kdseg sweeps (``kdseg.sweep.driver.plan_sweep`` + ``run_sweep``, one Ray session) over the SAME
trial configs: the space is one grouped grid key whose points are ``train.lr`` x ``distill.alpha`` in
an order shuffled with ``--order-seed`` (``num_samples`` = grid size), and kdseg runs every grid point
first, in that order, so both arms see exactly the same configs in the same order (and, training being
a function of (config, seed, epoch), the same learning curves). The order is shuffled because a grid
listed from the worst to the best setting (ascending lr here) is ASHA's worst case: every new trial
beats the rung cut-off set by the ones before it, and nothing is stopped.

- ``asha``: ``sweep.asha`` = ``{max_t, grace_period, reduction_factor}`` from the command line.
- ``fifo``: the same, with ``grace_period = max_t``: ASHA's only rung is the last epoch, so no trial
  stops early (every trial runs to max_t, as FIFO would).

Compute = training epochs used, summed over trials (also reported: trial-seconds, the sum of every
epoch's train + validation time from each trial's metrics.jsonl). Best = the highest val_miou any
trial reported last (what the leaderboard ranks). Target: ASHA's best within 0.01 of FIFO's best,
with at most 40% of FIFO's compute. The models are tiny (lightweight UNets x0.5 teacher / x0.25
student) on tiny generated scenes so that the whole benchmark runs on 2 CPU cores in a few minutes.

    python benchmarks/asha_vs_fifo.py [--max-t 9] [--grace 2] [--rf 2] [--lrs 3e-4,1e-3,3e-3,1e-2]
        [--alphas 0.2,0.5,0.8] [--order-seed 0] [--concurrency 2] [--size 32x32] [--n 96] [--out DIR]

Then ASHA's rung logic (Ray's own) is replayed on the FIFO arm's learning curves for
``--replay-orders`` other orders of the same configs: how typical the one measured order is. The replay
compares what kdseg's ASHA compares at its rungs, each trial's reported ``score`` (the objective, here
val_miou, with the quality floor: ``kdseg.sweep.selection``), and measures what it keeps in val_miou; a JSON
line without score curves (written before they were recorded) is replayed on val_miou and says so.

Prints a table per arm, a comparison, the machine and its load, and one JSON line
``{"benchmark": "asha_vs_fifo", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
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
    trial_reported,
    work_dir,
)

BEST_TOLERANCE = 0.01
COMPUTE_TARGET = 0.35
# (grace_period:reduction_factor) pairs replayed on the FIFO curves
DEFAULT_REPLAY_GRID = "1:2,1:3,1:4,2:2,2:3,2:4,3:2,3:3"


def write_space(folder: Path, root: Path, args, grace: int, name: str) -> Path:
    h, w = args.size
    base = {
        "data": {
            "format": "carla",
            "root": str(root),
            "image_size": [h, w],
            "num_classes": 13,
            "augment": {"enabled": False},
        },
        "teacher": {"arch": "lightweight_unet", "width": 0.5},
        "student": {"arch": "lightweight_unet", "width": 0.25},
        "distill": {"mode": "online", "temperature": 4.0, "alpha": 0.5, "sites": ["logits"]},
        "train": {"epochs": args.max_t, "batch_size": args.batch, "num_workers": 0, "seed": 0},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    points = grid_points(args)
    n = len(points)
    space = {
        "base": "base.yaml",
        # one grouped grid key: the points run first, in this (shuffled, seeded) order, in both arms
        "space": {"hp": {"grid": points}},
        "sweep": {
            "num_samples": n,  # the grid and nothing else: both arms run the same configs
            "metric": "val_miou",
            "mode": "max",
            "objective": "val_miou",
            "asha": {"max_t": args.max_t, "grace_period": grace, "reduction_factor": args.rf},
            "resources_per_trial": {"cpu": 1, "gpu": 0},
            "max_concurrent": args.concurrency,
            "seed": 0,
            "max_failures": 0,
        },
        "storage": None,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def grid_points(args) -> list[dict[str, Any]]:
    """lr x alpha, in an order shuffled by ``--order-seed`` (an order sorted by quality is ASHA's worst case)."""
    import random

    points = [
        {"train.lr": lr, "distill.alpha": a, "label": f"lr={lr:g},alpha={a:g}"}
        for lr in args.lrs
        for a in args.alphas
    ]
    random.Random(args.order_seed).shuffle(points)
    return points


def run_arm(name: str, space: Path, out_root: Path) -> dict[str, Any]:
    from kdseg.layout import CONFIG_FILE, TRIAL_RUN_DIR

    _, result, wall = timed_sweep(name, space, out_root)
    trials = []
    for row in result.leaderboard:
        epochs = trial_epochs(row)
        scores = trial_reported(row, "score")
        cfg_file = Path(row["path"]) / TRIAL_RUN_DIR / CONFIG_FILE if row.get("path") else None
        cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file is not None and cfg_file.exists() else {}
        trials.append(
            {
                "trial_id": row["trial_id"],
                "lr": (cfg.get("train") or {}).get("lr"),
                "alpha": (cfg.get("distill") or {}).get("alpha"),
                "status": row["status"],
                "epochs": int(row.get("epochs") or 0),
                "val_miou": row.get("val_miou"),
                "trial_s": sum(e.get("epoch_time_s", 0.0) for e in epochs),
                "curve": [e.get("val_miou") for e in epochs],
                "score_curve": [scores.get(e.get("epoch")) for e in epochs],  # what ASHA compared
            }
        )
    scored = [t for t in trials if t["val_miou"] is not None]
    best = max(scored, key=lambda t: t["val_miou"]) if scored else None
    return {
        "arm": name,
        "wall_s": wall,
        "trials": sorted(trials, key=lambda t: (t["lr"] or 0, t["alpha"] or 0)),
        "epochs_total": sum(t["epochs"] for t in trials),
        "trial_s_total": sum(t["trial_s"] for t in trials),
        "best_val_miou": best["val_miou"] if best else None,
        "best_config": {"train.lr": best["lr"], "distill.alpha": best["alpha"]} if best else None,
    }


def print_arm(arm: dict[str, Any]) -> None:
    table(
        ["lr", "alpha", "status", "epochs", "trial s", "val_miou", "val_miou per epoch"],
        [
            [
                t["lr"],
                t["alpha"],
                t["status"],
                t["epochs"],
                t["trial_s"],
                t["val_miou"],
                " ".join(f"{v:.3f}" if v is not None else "-" for v in t["curve"]),
            ]
            for t in arm["trials"]
        ],
        f"{arm['arm']}: {len(arm['trials'])} trials, {arm['epochs_total']} epochs, "
        f"{arm['trial_s_total']:.1f} trial-seconds, sweep wall {arm['wall_s']:.1f} s",
    )


def fifo_curves(fifo: dict[str, Any], max_t: int, key: str = "curve") -> dict[tuple, list[float]]:
    """(lr, alpha) -> val_miou per epoch (``key="score_curve"``: the score ASHA compares), for the FIFO
    arm's trials that ran all ``max_t`` epochs; {} when a trial lacks that curve (an older JSON line)."""
    full = [t for t in fifo["trials"] if len(t["curve"]) == max_t and None not in t["curve"]]
    curves = {(t["lr"], t["alpha"]): t.get(key) for t in full}
    if any(c is None or len(c) != max_t or None in c for c in curves.values()):
        return {}
    return curves


def rung_curves(fifo: dict[str, Any], max_t: int) -> tuple[dict[tuple, list[float]] | None, str]:
    """The curves ASHA's rungs compare in a replay, and their name: the trials' reported score, or
    val_miou (with a note) when the JSON line has no score curves."""
    scores = fifo_curves(fifo, max_t, "score_curve")
    if scores:
        return scores, "score"
    return None, "val_miou (this JSON line has no score curves; kdseg's ASHA compares the score)"


def replay(
    curves: dict[tuple, list[float]],
    max_t: int,
    grace: int,
    rf: float,
    concurrency: int,
    orders: int,
    rungs_on: dict[tuple, list[float]] | None = None,
) -> dict[str, Any] | None:
    """Ray's own ASHA rung logic replayed on the FIFO arm's learning curves, for many trial orders.

    ``curves`` (val_miou) measure what is kept; ``rungs_on`` (default: ``curves``) is what the rungs
    compare: the score a kdseg sweep reports.

    The curves are what every trial reaches at each epoch whatever the scheduler, so ASHA's outcome
    for another order of the same configs can be computed without training: ``concurrency`` slots,
    equal epoch times, a stopped or finished trial's slot taken by the next in the order. One run of
    the benchmark is one order; this says how typical its result is. Best effort: None when Ray's
    private ``_Bracket`` class is not there.
    """
    import random
    import statistics
    import types

    try:
        from ray.tune.schedulers.async_hyperband import _Bracket
    except ImportError:
        return None
    if not curves:
        return None
    best = max(c[-1] for c in curves.values())
    rungs_on = rungs_on or curves

    def one(order: list) -> tuple[float, float]:
        bracket = _Bracket(min_t=grace, max_t=max_t, reduction_factor=rf, s=0, stop_last_trials=True)
        pending, running, used, final = list(order), {}, 0, []
        while pending or running:
            while pending and len(running) < concurrency:
                running[pending.pop(0)] = 0
            key = min(running, key=lambda q: running[q])
            running[key] += 1
            epoch = running[key]
            value = rungs_on[key][epoch - 1]
            stop = bracket.on_result(types.SimpleNamespace(trial_id=str(key)), epoch, value) == "STOP"
            if stop or epoch >= max_t:
                used += epoch
                final.append(curves[key][epoch - 1])
                del running[key]
        return used / (len(curves) * max_t), best - max(final)

    results = []
    for seed in range(orders):
        order = list(curves)
        random.Random(seed).shuffle(order)
        results.append(one(order))
    fractions = [r[0] for r in results]
    rungs = [m for m, _ in reversed(_Bracket(grace, max_t, rf, 0)._rungs)]
    return {
        "grace_period": grace,
        "reduction_factor": rf,
        "rungs": [round(m, 3) for m in rungs],
        "orders": orders,
        "compute_fraction_median": statistics.median(fractions),
        "compute_fraction_max": max(fractions),
        "compute_target_met_share": sum(f <= COMPUTE_TARGET for f in fractions) / orders,
        "best_target_met_share": sum(g <= BEST_TOLERANCE for _, g in results) / orders,
        "both_met_share": sum(f <= COMPUTE_TARGET and g <= BEST_TOLERANCE for f, g in results) / orders,
        "best_gap_max": max(g for _, g in results),
        "sorted_worst_to_best": one(sorted(curves, key=lambda k: curves[k][-1])),
    }


def replay_grid(
    curves, max_t: int, grid: list[tuple[int, float]], concurrency: int, orders: int, rungs_on=None
) -> list:
    """:func:`replay` for each (grace_period, reduction_factor) of ``grid`` on the same curves and orders."""
    rows = [replay(curves, max_t, g, rf, concurrency, orders, rungs_on) for g, rf in grid if 1 <= g <= max_t]
    return [r for r in rows if r is not None]


def print_replay_grid(rows: list[dict[str, Any]], chosen: tuple[int, float] | None, compared: str) -> None:
    table(
        [
            "grace",
            "rf",
            "rungs",
            "compute median",
            "compute worst",
            f"<= {COMPUTE_TARGET:.0%}",
            "best kept",
            "worst gap",
            "both",
            "sorted worst->best",
        ],
        [
            [
                r["grace_period"],
                f"{r['reduction_factor']:g}",
                " ".join(f"{m:g}" for m in r["rungs"]),
                f"{r['compute_fraction_median']:.1%}",
                f"{r['compute_fraction_max']:.1%}",
                f"{r['compute_target_met_share']:.0%}",
                f"{r['best_target_met_share']:.0%}",
                r["best_gap_max"],
                f"{r['both_met_share']:.0%}"
                + (" <- chosen" if chosen == (r["grace_period"], r["reduction_factor"]) else ""),
                f"{r['sorted_worst_to_best'][0]:.1%}",
            ]
            for r in rows
        ],
        f"ASHA rung settings replayed on the FIFO curves, {rows[0]['orders']} shuffled orders each, rungs "
        f"comparing {compared} (best kept: final best val_miou within {BEST_TOLERANCE} of FIFO's)"
        if rows
        else "no replay",
    )


KEEP_BEST_SHARE = 0.95  # a default must keep the sweep's best student in (almost) every trial order


def choose(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The answer first, then the compute: among the settings that keep FIFO's best (within the tolerance)
    in at least KEEP_BEST_SHARE of the orders, the lowest median compute (then the lower worst case);
    when none does, the setting that keeps it most often."""
    if not rows:
        return None
    keeps = [r for r in rows if r["best_target_met_share"] >= KEEP_BEST_SHARE]
    if keeps:
        return min(keeps, key=lambda r: (r["compute_fraction_median"], r["compute_fraction_max"]))
    return max(rows, key=lambda r: (r["best_target_met_share"], -r["compute_fraction_median"]))


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _grid(text: str) -> list[tuple[int, float]]:
    """``"1:3,2:3"`` -> [(1, 3.0), (2, 3.0)]: (grace_period, reduction_factor) pairs."""
    pairs = []
    for item in text.split(","):
        if item.strip():
            g, rf = item.split(":")
            pairs.append((int(g), float(rf)))
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-t", type=int, default=9, help="epochs of a trial that is never stopped")
    p.add_argument("--grace", type=int, default=2, help="ASHA grace_period (epochs; kdseg's default)")
    p.add_argument("--rf", type=int, default=2, help="ASHA reduction_factor (kdseg's default)")
    p.add_argument("--lrs", type=_floats, default=[3e-4, 1e-3, 3e-3, 1e-2], help="grid of train.lr")
    p.add_argument("--alphas", type=_floats, default=[0.2, 0.5, 0.8], help="grid of distill.alpha")
    p.add_argument("--order-seed", type=int, default=0, help="seed of the (shared) order of the grid points")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--replay-orders", type=int, default=50, help="trial orders to replay ASHA on (0: none)")
    p.add_argument(
        "--replay-grid",
        type=_grid,
        default=_grid(DEFAULT_REPLAY_GRID),
        help=f"(grace_period:reduction_factor) settings replayed on the FIFO curves (default {DEFAULT_REPLAY_GRID})",
    )
    p.add_argument(
        "--replay-from",
        type=Path,
        default=None,
        help="a JSON line this benchmark wrote: replay its FIFO curves only, no training",
    )
    p.add_argument("--size", type=parse_size, default=(32, 32))
    p.add_argument("--n", type=int, default=96, help="generated images (80/20 train/val)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", type=Path, default=None, help="keep data and both sweep folders here")
    args = p.parse_args()
    if not (1 <= args.grace <= args.max_t) or args.rf < 2:
        p.error("need 1 <= --grace <= --max-t and --rf >= 2")
    if any(g < 1 or rf <= 1 for g, rf in args.replay_grid):
        p.error("--replay-grid: need grace >= 1 and reduction factor > 1 in every pair")

    os.environ.setdefault("WANDB_MODE", "disabled")
    machine = machine_info()
    print_machine(machine)
    started = time.perf_counter()
    if args.replay_from is not None:
        replay_only(args, machine, started)
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with work_dir(args.out, "kdseg-asha-fifo-") as work:
        root = synth_data(work, n=args.n, size=args.size)
        spaces = work / f"spaces-{stamp}"
        spaces.mkdir()
        asha = run_arm(f"asha-{stamp}", write_space(spaces, root, args, args.grace, "asha"), work / "runs")
        fifo = run_arm(f"fifo-{stamp}", write_space(spaces, root, args, args.max_t, "fifo"), work / "runs")
        import ray

        machine["ray"] = ray.__version__
        ray.shutdown()

    for arm in (asha, fifo):
        print_arm(arm)
    compute = asha["epochs_total"] / fifo["epochs_total"] if fifo["epochs_total"] else None
    seconds = asha["trial_s_total"] / fifo["trial_s_total"] if fifo["trial_s_total"] else None
    gap = (
        fifo["best_val_miou"] - asha["best_val_miou"]
        if None not in (fifo["best_val_miou"], asha["best_val_miou"])
        else None
    )
    best_ok = gap is not None and gap <= BEST_TOLERANCE
    compute_ok = compute is not None and compute <= COMPUTE_TARGET
    table(
        ["arm", "epochs", "trial-seconds", "best val_miou", "best config"],
        [
            [
                a["arm"].split("-")[0],
                a["epochs_total"],
                a["trial_s_total"],
                a["best_val_miou"],
                a["best_config"],
            ]
            for a in (asha, fifo)
        ],
        f"ASHA (grace {args.grace}, reduction factor {args.rf}, max_t {args.max_t}) vs every trial to max_t",
    )
    print(
        f"\nASHA used {compute:.1%} of the epochs ({seconds:.1%} of the trial-seconds) of running every "
        f"trial to max_t (target <= {COMPUTE_TARGET:.0%}: {'met' if compute_ok else 'NOT met'}); its best "
        f"val_miou is {gap:+.4f} below the best found by running everything (target <= {BEST_TOLERANCE}: "
        f"{'met' if best_ok else 'NOT met'})"
    )
    curves = fifo_curves(fifo, args.max_t)
    rungs_on, compared = rung_curves(fifo, args.max_t)
    rp = (
        replay(curves, args.max_t, args.grace, args.rf, args.concurrency, args.replay_orders, rungs_on)
        if args.replay_orders
        else None
    )
    if rp is not None:
        rp["rungs_compare"] = compared
        worst = rp["sorted_worst_to_best"]
        print(
            f"replayed on the FIFO curves for {rp['orders']} shuffled orders (Ray's ASHA rungs comparing "
            f"{compared}; best kept: val_miou; equal epoch "
            f"times): compute median {rp['compute_fraction_median']:.1%} (max {rp['compute_fraction_max']:.1%}); "
            f"compute target met in {rp['compute_target_met_share']:.0%} of orders, best target in "
            f"{rp['best_target_met_share']:.0%}, both in {rp['both_met_share']:.0%}; configs sorted worst to "
            f"best: {worst[0]:.1%} of the compute"
        )
    grid, chosen = grid_report(curves, args, rungs_on, compared)
    emit(
        {
            "benchmark": "asha_vs_fifo",
            "command": " ".join(["python", "benchmarks/asha_vs_fifo.py", *sys.argv[1:]]),
            "machine": machine,
            "settings": {
                "max_t": args.max_t,
                "grace_period": args.grace,
                "reduction_factor": args.rf,
                "lrs": args.lrs,
                "alphas": args.alphas,
                "order": [pt["label"] for pt in grid_points(args)],
                "concurrency": args.concurrency,
                "size": list(args.size),
                "n": args.n,
            },
            "summary": {
                "compute_fraction_epochs": compute,
                "compute_fraction_trial_seconds": seconds,
                "asha_best_val_miou": asha["best_val_miou"],
                "fifo_best_val_miou": fifo["best_val_miou"],
                "best_gap": gap,
                "target_compute_fraction": COMPUTE_TARGET,
                "target_best_gap": BEST_TOLERANCE,
                "compute_target_met": compute_ok,
                "best_target_met": best_ok,
            },
            "replay": rp,
            "replay_grid": grid,
            "replay_chosen": chosen,
            "asha": asha,
            "fifo": fifo,
            "total_s": time.perf_counter() - started,
        }
    )


def grid_report(curves, args, rungs_on, compared: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The grid of rung settings replayed and printed, and the one :func:`choose` picks."""
    if not args.replay_orders or not curves:
        return [], None
    rows = replay_grid(curves, args.max_t, args.replay_grid, args.concurrency, args.replay_orders, rungs_on)
    for r in rows:
        r["rungs_compare"] = compared
    best = choose(rows)
    print_replay_grid(rows, (best["grace_period"], best["reduction_factor"]) if best else None, compared)
    if best is not None:
        print(
            (
                f"chosen (best kept in >= {KEEP_BEST_SHARE:.0%} of orders, then the least compute): "
                if best["best_target_met_share"] >= KEEP_BEST_SHARE
                else f"chosen (none keeps the best in >= {KEEP_BEST_SHARE:.0%} of orders: the one keeping it most often): "
            )
            + f"grace_period {best['grace_period']}, reduction_factor "
            f"{best['reduction_factor']:g}: both targets met in {best['both_met_share']:.0%} of orders, best kept "
            f"in {best['best_target_met_share']:.0%}, compute median "
            f"{best['compute_fraction_median']:.1%}, worst {best['compute_fraction_max']:.1%} (target <= "
            f"{COMPUTE_TARGET:.0%})"
        )
    return rows, best


def replay_only(args, machine: dict[str, Any], started: float) -> None:
    """``--replay-from``: the grid of rung settings on the FIFO curves of an earlier run, no training."""
    lines = [ln for ln in args.replay_from.read_text().splitlines() if ln.strip().startswith("{")]
    earlier = json.loads(lines[-1])
    settings = earlier["settings"]
    args.max_t, args.concurrency = int(settings["max_t"]), int(settings["concurrency"])
    curves = fifo_curves(earlier["fifo"], args.max_t)
    rungs_on, compared = rung_curves(earlier["fifo"], args.max_t)
    print(
        f"replaying {len(curves)} FIFO curves of {args.replay_from} (max_t {args.max_t}, concurrency "
        f"{args.concurrency}; measured on: {earlier['machine'].get('cpu_model')}, load "
        f"{earlier['machine'].get('loadavg')}); rungs comparing {compared}"
    )
    grid, chosen = grid_report(curves, args, rungs_on, compared)
    emit(
        {
            "benchmark": "asha_vs_fifo",
            "command": " ".join(["python", "benchmarks/asha_vs_fifo.py", *sys.argv[1:]]),
            "machine": machine,
            "replay_from": str(args.replay_from),
            "settings": {**settings, "replay_orders": args.replay_orders},
            "replay_grid": grid,
            "replay_chosen": chosen,
            "total_s": time.perf_counter() - started,
        }
    )


if __name__ == "__main__":
    main()
