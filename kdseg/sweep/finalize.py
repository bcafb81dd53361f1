"""The end of a sweep: one leaderboard row per Ray trial, ``leaderboard.csv``, ``best_config.yaml``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from kdseg.errors import KdsegError
from kdseg.layout import LEADERBOARD, ORPHANED_DIR, TRIAL_RUN_DIR, TUNE_DIR, read_metrics, trial_run_dir
from kdseg.sweep.plan import SweepPlan, SweepResult
from kdseg.sweep.tuner import objective_metrics


def collect_rows(plan: SweepPlan, results) -> list[dict[str, Any]]:
    """One leaderboard row per Ray trial."""
    from kdseg.sweep.selection import CONTROL_KEY
    from kdseg.sweep.space import describe_trial, trial_config, trial_label
    from kdseg.sweep.trial_records import trial_status

    max_t = plan.spec.sweep.asha.max_t
    rows = []
    for r in results:
        m = dict(r.metrics or {})
        trial_id = m.get("trial_id") or Path(r.path).name
        status = trial_status(m, r.error is not None, max_t)
        params = {k.removeprefix("config/"): v for k, v in (r.config or {}).items()}
        row: dict[str, Any] = {"trial_id": trial_id, "status": status}
        try:
            row.update(describe_trial(trial_config(plan.spec, params)))
        except KdsegError:
            pass
        failed = status in ("error", "diverged")
        row.update(
            label=trial_label(plan.spec, params) or None,
            control=params.get(CONTROL_KEY) is not None,
            student_params=m.get("student_params"),
            val_miou=None if failed else m.get("val_miou"),
            teacher_val_miou=m.get("teacher_val_miou"),
            score=None if failed else m.get("score"),
            quality_floor=m.get("quality_floor"),
            below_floor=None if failed else m.get("below_floor"),
            iou_per_mparam=None if failed else m.get("iou_per_mparam"),
            gflops=m.get("gflops"),
            latency_ms=m.get("latency_ms"),
            iou_per_gflop=None if failed else m.get("iou_per_gflop"),
            epochs=m.get("epoch") or 0,
            # why it failed; for a trial that survived a damaged checkpoint, what happened
            error=_error_text(r.error) if r.error is not None else (m.get("error") or m.get("recovered")),
            params=params,
            path=str(r.path),
        )
        rows.append(row)
    return rows


def _error_text(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:300]


def _set_aside_orphans(sweep_dir: Path, trial_ids: set[str]) -> None:
    """Move trial folders that the Ray experiment does not know out of ``tune/``.

    A driver killed after starting a trial but before Tune saved its experiment state leaves a
    folder behind; the resumed sweep reruns that trial (its Optuna trial is adopted) under a new id.
    The stale folder goes to ``orphaned/`` (``ORPHANED_DIR``) so that every folder in ``tune/`` is one leaderboard row.
    """
    tune_dir = sweep_dir / TUNE_DIR
    for folder in sorted(p for p in tune_dir.iterdir() if p.is_dir()):
        if folder.name not in trial_ids and (folder / TRIAL_RUN_DIR).is_dir():
            dest = sweep_dir / ORPHANED_DIR / folder.name
            dest.parent.mkdir(exist_ok=True)
            shutil.move(str(folder), str(dest))


def finalize(plan: SweepPlan, results, started: float) -> SweepResult:
    """Write leaderboard.csv and best_config.yaml; close any Optuna trial still RUNNING."""
    from kdseg.deploy.best_config import export_config
    from kdseg.sweep.final_eval import run_final_eval
    from kdseg.sweep.optuna_storage import open_storage
    from kdseg.sweep.ranking import best_row, build_leaderboard, write_leaderboard_csv
    from kdseg.sweep.selection import settle_controls
    from kdseg.sweep.trial_records import close_running, record_controls

    rows = collect_rows(plan, results)
    _set_aside_orphans(plan.sweep_dir, {r["trial_id"] for r in rows})
    s = plan.spec.sweep
    history = {}
    for r in rows:
        try:
            history[r["trial_id"]] = read_metrics(trial_run_dir(plan.sweep_dir, r["trial_id"]))
        except (OSError, ValueError):
            history[r["trial_id"]] = []
    settle_controls(rows, history, s.objective, s.quality_floor)
    board = build_leaderboard(rows, s.objective, s.asha.max_t, cost=s.cost)
    board = run_final_eval(plan, board)  # sweep.final_eval: test_miou after ranking, never fed back
    write_leaderboard_csv(
        [{k: v for k, v in r.items() if k not in ("params", "path")} for r in board],
        plan.sweep_dir / LEADERBOARD,
    )
    storage = open_storage(plan.storage_url)
    close_running(storage, plan.name)
    record_controls(storage, plan.name, board, objective_metrics(s)[0])
    best_path = None
    if best_row(board, s.asha.max_t) is not None:
        best_path, _ = export_config(plan.sweep_dir)
    return SweepResult(plan.sweep_dir, board, best_path, time.perf_counter() - started)
