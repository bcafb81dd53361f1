"""``kdseg sweep`` / ``kdseg-sweep`` and ``kdseg resume``: run a sweep, print its leaderboard and answer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdseg.layout import LEADERBOARD

# ---------------------------------------------------------------------------------------- sweep


def cmd_sweep(args: argparse.Namespace) -> int:
    from kdseg.sweep.space import load_space

    overrides = args.overrides
    if args.smoke:
        from kdseg.sweep import smoke

        overrides = smoke.smoke_overrides(args.space, args.overrides)
        print(smoke.describe(overrides, args.overrides), file=sys.stderr)
    # A bad space file or --set is refused here, before Ray, Optuna and torch are imported.
    load_space(args.space, overrides)
    from kdseg.sweep.driver import plan_sweep, run_sweep

    plan = plan_sweep(
        args.space,
        out_root=args.out,
        name=args.name,
        overrides=overrides,
        address=args.address,
        verbose=args.verbose,
    )
    return _print_sweep_result(run_sweep(plan))


def cmd_resume(args: argparse.Namespace) -> int:
    from kdseg.sweep.driver import resume_sweep

    return _print_sweep_result(
        resume_sweep(args.sweep_dir, address=args.address, verbose=args.verbose, storage=args.storage)
    )


def _print_sweep_result(result, console=None) -> int:
    from rich.console import Console

    from kdseg.sweep.leaderboard_table import render_leaderboard

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and CI: wide enough for the whole table
            console = Console(width=160)
    console.print(render_leaderboard(result.leaderboard, title=f"leaderboard: {result.sweep_dir.name}"))
    counts: dict[str, int] = {}
    for row in result.leaderboard:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(
        f"{len(result.leaderboard)} trials ({summary}) in {result.wall_time_s:.0f}s", highlight=False
    )
    from kdseg.tracking.run import finish_sweep

    # Paths under the working directory are shown relative to it, so that a command stays on one line
    # of a narrow terminal; commands are printed unbroken (soft wrap) so that they copy whole.
    sweep_dir = Path(result.sweep_dir).resolve()
    short = _shown(sweep_dir)
    from kdseg.sweep.teacher_stage import describe_teachers

    lines = [*describe_teachers(sweep_dir), f"leaderboard: {short / LEADERBOARD}"]
    lines += [line.replace(str(sweep_dir), str(short)) for line in finish_sweep(None, result)]
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if result.best_config is None:
        from kdseg.sweep.ranking import why_no_winner

        why = why_no_winner(result.leaderboard)
        if "every trial failed" in why:
            console.print("no trial produced a result; see the errors above", style="red")
            return 1
        # the sweep worked; its answer is that no student is good enough to deploy
        console.print(f"no winner, so no best_config.yaml: {why}", style="yellow", highlight=False)
        return 0
    console.print(f"best config: {_shown(result.best_config)}", highlight=False, soft_wrap=True)
    return 0


def _shown(path) -> Path:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
