"""``kdseg report SWEEP_DIR``: the parser and the command."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kdseg.fileio import atomic_write
from kdseg.layout import (
    REPORT_FILE,
)
from kdseg.report.html import render_html
from kdseg.report.load import load_sweep
from kdseg.report.wandb_report import publish_wandb_report, wants_wandb_report

# ------------------------------------------------------------------------------------------- CLI


def cmd_report(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    sd = load_sweep(args.sweep_dir)
    url = None
    publish, why = wants_wandb_report(sd, args.wandb)
    if publish:
        try:
            url = publish_wandb_report(sd)
        except Exception as e:
            why = f"W&B Report not saved: {type(e).__name__}: {str(e).strip()[:200]}"
    path = Path(args.output) if args.output else sd.sweep_dir / REPORT_FILE
    page = render_html(sd, url)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(page)
    size = path.stat().st_size / 1024
    print(f"wrote {path} ({len(sd.rows)} trials, {size:.0f} KB, {time.perf_counter() - started:.1f}s)")
    if url:
        print(f"W&B Report: {url}")
    elif args.wandb != "never":
        print(f"no W&B Report: {why}")
    return 0


def add_report_parser(sub) -> argparse.ArgumentParser:
    """Register ``kdseg report`` on an argparse subparsers object."""
    r = sub.add_parser(
        "report",
        help="write SWEEP_DIR/report.html (leaderboard, Pareto front, curves, effects, images); a W&B Report when online",
        description="Write a self-contained HTML report of a finished sweep; with W&B online, also a W&B Report.",
    )
    r.add_argument("sweep_dir", help="the sweep folder (runs/NAME)")
    r.add_argument("-o", "--output", help="output file (default: SWEEP_DIR/report.html)")
    r.add_argument(
        "--wandb",
        choices=("auto", "always", "never"),
        default="auto",
        help="W&B Report: auto (when W&B is online and the sweep logged online runs), always (try), never",
    )
    r.set_defaults(func=cmd_report)
    return r
