"""``sweep.final_eval``: the chosen students measured once on the test split, after the sweep.

Validation drives everything a sweep decides (ASHA stops, TPE samples, the leaderboard ranks); the
test split plays no part in it. Once the leaderboard is ranked, :func:`run_final_eval` measures its
``top_k`` rows (or its Pareto front) on the test split with :mod:`kdseg.evaluate`, writes
``eval_test.json`` in each trial's run folder and ``final_eval.json`` in the sweep folder, and adds
``test_miou`` (the same metric as ``val_miou``, ``train.metric``) to those rows only. The ranking is
not touched, and nothing reads ``test_miou`` to choose (``kdseg export --rank-by test_miou`` is
refused).

:func:`check_final_eval` runs with the other checks before a sweep starts: with ``final_eval`` on, the
test split must exist and share no image with the validation split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdseg.errors import ConfigError, KdsegError
from kdseg.layout import FINAL_EVAL_FILE, trial_run_dir


def check_final_eval(spec, source) -> None:
    """Refuse ``sweep.final_eval`` without a held-out test split (a ConfigError naming ``source``)."""
    fe = spec.sweep.final_eval
    if fe is None:
        return
    from kdseg.data.load import find_split

    data = spec.base_config.data
    try:
        layout, test = find_split(data, fe.split)
    except KdsegError as e:
        raise ConfigError(f"{source}: sweep.final_eval: no {fe.split} split: {e}") from None
    val = {p.image.resolve() for p in find_split(data, "val")[1]}
    shared = [p.image for p in test if p.image.resolve() in val]
    if shared:
        why = f" ({layout.test_note})" if layout.test_note else ""
        raise ConfigError(
            f"{source}: sweep.final_eval: the {fe.split} split shares {len(shared)} images with the "
            f"validation split the sweep selects on (e.g. {shared[0]}){why}"
        )


def run_final_eval(plan, board: list[dict[str, Any]], console=None) -> list[dict[str, Any]]:
    """The ranked ``board`` with ``test_miou`` on the rows ``sweep.final_eval`` selects (same order).

    A problem found now (the test folder gone since the sweep started) is printed and leaves the
    board as it was: the sweep's results are never lost to its final evaluation.
    """
    fe = plan.spec.sweep.final_eval
    if fe is None:
        return board
    from rich.console import Console

    from kdseg.deploy.evaluate import evaluate_targets, run_target, select_rows, write_results

    console = console or Console(stderr=True)
    rows = select_rows(board, fe.top_k, fe.pareto)
    what = "the Pareto front" if fe.pareto else f"the top {fe.top_k}"
    try:
        targets = []
        for r in rows:
            t = run_target(trial_run_dir(plan.sweep_dir, str(r["trial_id"])), name=str(r["trial_id"]))
            t.row = r
            targets.append(t)
        console.print(
            f"final evaluation of {what} ({len(targets)} trials) on the {fe.split} split", highlight=False
        )
        results = evaluate_targets(targets, fe.split, console=console)
    except Exception as e:  # a KdsegError, or anything else: the ranked sweep must still be written
        text = str(e) if isinstance(e, KdsegError) else f"{type(e).__name__}: {e}"
        console.print(f"final evaluation skipped: {text}", style="red", highlight=False, markup=False)
        return board
    write_results(targets, results, fe.split, None)
    scores = {str(r["trial_id"]): r["student"]["score"] for r in results}
    out = [
        {**row, "test_miou": scores[str(row["trial_id"])]} if str(row["trial_id"]) in scores else row
        for row in board
    ]
    summary = {
        "split": fe.split,
        "selected": "pareto" if fe.pareto else f"top_k={fe.top_k}",
        "note": "measured after ranking; never used for selection",
        "results": results,
    }
    path = Path(plan.sweep_dir) / FINAL_EVAL_FILE
    from kdseg.fileio import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(summary, f, indent=1)
    for r in results:
        val, test = r["student"]["run_val_miou"], r["student"]["score"]
        gap = f" (gap {test - val:+.4f})" if val is not None and test is not None else ""
        console.print(f"  {r['name']}: val {_f(val)}  {fe.split} {_f(test)}{gap}", highlight=False)
    console.print(f"final evaluation: {path}", highlight=False)
    return out


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"
