"""``kdseg eval TARGET... --split S``: the parser and the command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kdseg.deploy.evaluate import SPLITS, evaluate_targets, render_tables, resolve_targets, write_results
from kdseg.errors import KdsegError
from kdseg.layout import (
    LEADERBOARD,
)

# -------------------------------------------------------------------------------------- command


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kdseg.fileio import require_writable

    if args.top_k is not None and args.pareto:
        raise KdsegError("--top-k and --pareto: choose one")
    pareto = args.pareto or args.top_k is None  # a sweep folder's Pareto front by default
    targets = resolve_targets(
        args.targets, config=args.config, overrides=args.overrides, top_k=args.top_k, pareto=pareto
    )
    sweeps = [Path(p) for p in args.targets if (Path(p) / LEADERBOARD).is_file() and Path(p).is_dir()]
    extra = sweeps[0] if len(sweeps) == 1 and len(args.targets) == 1 else None
    for folder in {t.out_dir for t in targets} | ({extra} if extra else set()):
        require_writable(folder, "evaluation")
    err = Console(stderr=True)
    results = evaluate_targets(targets, args.split, teacher=args.teacher, progress=not args.json, console=err)
    written = write_results(targets, results, args.split, extra)
    if not args.json:
        out = Console()
        if not out.is_terminal:
            out = Console(width=160)
        for table in render_tables(results, args.split):
            out.print(table)
        for r in results:
            if r.get("note"):
                out.print(f"note: {r['data']}: {r['note']}", highlight=False)
            if r.get("teacher_note"):
                out.print(f"{r['name']}: teacher not evaluated: {r['teacher_note']}", highlight=False)
        for path in written:
            out.print(f"wrote {path}", highlight=False)
    print(json.dumps({"split": args.split, "results": results}))
    return 0


def add_eval_parser(sub) -> argparse.ArgumentParser:
    """Register ``kdseg eval`` on an argparse subparsers object."""
    e = sub.add_parser(
        "eval",
        help="measure trained students (and teachers) on the test, val or train split",
        description="Evaluate trained students on a named split: dataset-level mIoU, per-image mIoU, "
        "pixel accuracy and per-class IoU, as tables and one JSON line; written to eval_<split>.json "
        "beside each run. Test numbers are never used for selection.",
    )
    e.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="a run folder (config.yaml + student.pt), a sweep trial folder (tune/<trial>), a student.pt "
        "(with --config), or a sweep folder (its Pareto front, or --top-k)",
    )
    e.add_argument("--split", choices=SPLITS, default="test", help="the split to measure on (default: test)")
    e.add_argument("--config", help="training config of a student.pt (default: config.yaml beside it)")
    e.add_argument("--top-k", type=_positive_int, help="for a sweep folder: its K best rows")
    e.add_argument("--pareto", action="store_true", help="for a sweep folder: its Pareto front (the default)")
    e.add_argument(
        "--teacher",
        action="store_true",
        help="evaluate each run's teacher too, where a checkpoint of it exists",
    )
    e.add_argument("--json", action="store_true", help="print only the JSON line")
    e.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config key (repeatable), e.g. --set data.root=/other/copy",
    )
    e.set_defaults(func=cmd_eval)
    return e


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v
