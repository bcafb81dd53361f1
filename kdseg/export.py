"""``kdseg export``: a sweep's winning trial as a complete training config.

The config written is the trial's own resolved config (``tune/<trial_id>/run/config.yaml``, the
exact config its ``train_kd`` ran with, ``train.epochs = max_t``), so ``kdseg train`` on it reproduces
the trial: same data, same seed, same schedule.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kdseg.config import load_config, save_config
from kdseg.errors import KdsegError

LEADERBOARD = "leaderboard.csv"
BEST_CONFIG = "best_config.yaml"
TUNE_DIR = "tune"


def trial_run_dir(sweep_dir: Path, trial_id: str) -> Path:
    """The folder where a trial's train_kd wrote config.yaml, metrics.jsonl and student.pt."""
    return Path(sweep_dir) / TUNE_DIR / trial_id / "run"


def pick_trial(sweep_dir: Path, rank_by: str | None = None) -> dict[str, Any]:
    """The leaderboard row of the best trial (by the sweep's objective, or by ``rank_by``)."""
    from kdseg.ranking import best_row, build_leaderboard, read_leaderboard_csv
    from kdseg.space import load_resolved

    board_file = sweep_dir / LEADERBOARD
    if not board_file.exists():
        raise KdsegError(f"{sweep_dir}: no {LEADERBOARD} (not a sweep folder, or the sweep has not finished)")
    rows = read_leaderboard_csv(board_file)
    spec = load_resolved(sweep_dir / "sweep.yaml")
    if rank_by == "test_miou":
        raise KdsegError("--rank-by test_miou: test numbers are never used for selection (kdseg.final_eval)")
    if rank_by:
        try:
            rows = build_leaderboard(rows, rank_by, spec.max_t)
        except ValueError as e:
            raise KdsegError(f"--rank-by: {e}") from None
    best = best_row(rows)
    if best is None:
        raise KdsegError(f"{board_file}: no trial has a val_miou to rank (every trial failed?)")
    return best


def export_config(
    sweep_dir: str | os.PathLike, out: str | os.PathLike | None = None, rank_by: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write the best trial's training config; returns its path and leaderboard row."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise KdsegError(f"{sweep_dir}: no such sweep folder")
    row = pick_trial(sweep_dir, rank_by)
    src = trial_run_dir(sweep_dir, str(row["trial_id"])) / "config.yaml"
    if not src.exists():
        raise KdsegError(f"{src}: the trial's config is missing (was the sweep folder moved or pruned?)")
    cfg = load_config(src)
    cfg = cfg.model_copy(update={"name": f"{sweep_dir.name}-{row['trial_id']}"})
    path = save_config(cfg, Path(out) if out else sweep_dir / BEST_CONFIG)
    return path, row
