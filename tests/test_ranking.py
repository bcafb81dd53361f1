"""Leaderboard ranking, Pareto front, CSV round trip, table and plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console

from kdseg.report.pareto import plot_pareto
from kdseg.sweep.leaderboard_table import render_leaderboard
from kdseg.sweep.ranking import (
    LEADERBOARD_COLUMNS,
    best_row,
    build_leaderboard,
    iou_per_mparam,
    leaderboard_columns,
    pareto_mask,
    read_leaderboard_csv,
    why_no_winner,
    write_leaderboard_csv,
)

REQUIRED = (
    "trial_id, status, teacher, student, temperature, alpha, distill_site, alternation, "
    "student_params, val_miou, iou_per_mparam, epochs, pareto"
).split(", ")


def row(trial_id: str, status: str, miou: float | None, params: int, epochs: int, **extra) -> dict:
    base = {
        "trial_id": trial_id,
        "status": status,
        "teacher": "Unet/resnet34",
        "student": "Unet/resnet18",
        "mode": "online",
        "temperature": 4.0,
        "alpha": 0.5,
        "distill_site": "logits",
        "alternation": "none",
        "student_params": params,
        "val_miou": miou,
        "epochs": epochs,
    }
    return {**base, **extra}


def test_columns_cover_architecture_contract() -> None:
    assert set(REQUIRED) <= set(LEADERBOARD_COLUMNS)
    assert LEADERBOARD_COLUMNS[0] == "rank"
    assert (
        leaderboard_columns([{"trial_id": "a", "distill.feature_weight": 1.0}])[-1]
        == "distill.feature_weight"
    )


def test_pareto_mask_hand_made_points() -> None:
    #         A     B     C (dominated by A)  D (= B, tie)  E (no miou)  F (dominated by B and D)
    mious = [0.50, 0.70, 0.40, 0.70, None, 0.60]
    params = [1e6, 5e6, 2e6, 5e6, 1e5, 6e6]
    assert pareto_mask(mious, params) == [True, True, False, True, False, False]
    # same mIoU, fewer params dominates; same params, higher mIoU dominates
    assert pareto_mask([0.5, 0.5], [1e6, 2e6]) == [True, False]
    assert pareto_mask([0.5, 0.6], [1e6, 1e6]) == [False, True]
    assert pareto_mask([float("nan"), 0.1], [1e6, 1e6]) == [False, True]
    assert pareto_mask([], []) == []
    with pytest.raises(ValueError):
        pareto_mask([0.1], [])


def test_iou_per_mparam_formula() -> None:
    assert iou_per_mparam(0.6, 12_000_000) == pytest.approx(0.05)
    assert iou_per_mparam(None, 1e6) is None and iou_per_mparam(0.5, 0) is None
    rows = build_leaderboard([row("a", "completed", 0.6, 12_000_000, 3)], "val_miou", max_t=3)
    assert rows[0]["iou_per_mparam"] == pytest.approx(0.6 / 12.0)
    # a value already present is kept
    rows = build_leaderboard([row("a", "completed", 0.6, 12_000_000, 3, iou_per_mparam=9.0)], "val_miou", 3)
    assert rows[0]["iou_per_mparam"] == 9.0


def make_rows() -> list[dict]:
    return [
        row("err", "error", None, 1_000_000, 1, error="CUDA out of memory"),
        row("stop_hi", "stopped", 0.80, 10_000_000, 1),
        row("big", "completed", 0.70, 20_000_000, 3),  # best mIoU of the finished trials
        row("small", "completed", 0.50, 2_000_000, 3),  # best IoU per Mparam
        row("mid", "completed", 0.60, 10_000_000, 3),  # dominated by stop_hi (0.80 at 10M)
        row("div", "diverged", float("nan"), 5_000_000, 2),
        row("stop_lo", "stopped", 0.30, 1_000_000, 1, mode="none", teacher="-"),
    ]


def test_sorting_tiers_and_objectives() -> None:
    by_iou = build_leaderboard(make_rows(), "iou_per_mparam", max_t=3)
    assert [r["trial_id"] for r in by_iou] == ["small", "mid", "big", "stop_lo", "stop_hi", "err", "div"]
    assert [r["rank"] for r in by_iou] == list(range(1, 8))

    by_miou = build_leaderboard(make_rows(), "val_miou", max_t=3)
    assert [r["trial_id"] for r in by_miou][:5] == ["big", "mid", "small", "stop_hi", "stop_lo"]

    by_pareto = build_leaderboard(make_rows(), "pareto", max_t=3)
    front = {r["trial_id"] for r in by_pareto if r["pareto"]}
    # over the full-budget trials only: stop_hi (0.80 after 1 epoch) does not dominate mid (after 3)
    assert front == {"big", "mid", "small"}
    assert [r["trial_id"] for r in by_pareto][:5] == ["big", "mid", "small", "stop_hi", "stop_lo"]
    assert {r["trial_id"] for r in by_pareto[-2:]} == {"err", "div"}

    with pytest.raises(ValueError, match="cannot rank by .accuracy."):
        build_leaderboard(make_rows(), "accuracy", max_t=3)


def test_reaching_max_t_counts_not_the_status_label() -> None:
    rows = [row("a", "stopped", 0.9, 1_000_000, 2), row("b", "stopped", 0.1, 1_000_000, 4)]
    ranked = build_leaderboard(rows, "val_miou", max_t=4)
    assert [r["trial_id"] for r in ranked] == ["b", "a"]


def test_best_row_prefers_finished_trials() -> None:
    ranked = build_leaderboard(make_rows(), "val_miou", max_t=3)
    assert best_row(ranked)["trial_id"] == "big"
    assert best_row(make_rows(), max_t=3)["trial_id"] == "big"  # first finished row in given order
    # a trial stopped early or failed is never the winner
    only_stopped = [row("s", "stopped", 0.4, 1, 1), row("e", "error", 0.9, 1, 1)]
    assert best_row(only_stopped) is None and best_row(only_stopped, max_t=3) is None
    assert "ran the full budget" in why_no_winner(only_stopped, max_t=3)
    assert best_row([row("e", "error", 0.9, 1, 1)]) is None
    assert "every trial failed" in why_no_winner([row("e", "error", None, 1, 1)], max_t=3)


def test_quality_floor_tier_and_winner() -> None:
    """A tiny student under the floor ranks after every full-budget student over it, and never wins."""
    tiny = row("tiny", "completed", 0.045, 150_000, 3, score=0.045 - 1, below_floor=True)
    r18 = row("r18", "completed", 0.128, 14_300_000, 3, score=0.128 / 14.3, below_floor=False)
    stopped = row("stop", "stopped", 0.12, 14_300_000, 1, score=0.12 / 14.3, below_floor=False)
    ranked = build_leaderboard([tiny, stopped, r18], "iou_per_mparam", max_t=3)
    assert [r["trial_id"] for r in ranked] == ["r18", "tiny", "stop"]
    assert best_row(ranked, max_t=3)["trial_id"] == "r18"
    assert [r["trial_id"] for r in ranked if r["pareto"]] == ["r18"]  # the front excludes tiny too
    alone = build_leaderboard([tiny], "iou_per_mparam", max_t=3)
    assert best_row(alone, max_t=3) is None and "quality floor" in why_no_winner(alone, max_t=3)


def test_under_the_floor_rows_rank_by_their_own_miou_whatever_score_an_earlier_kdseg_reported() -> None:
    """A sweep begun before the score under the floor became val_miou - 1 (it was val_miou - floor) and
    resumed now holds both kinds of row: the leaderboard puts them on one scale."""
    old = row("old", "completed", 0.062, 80_000, 3, score=0.062 - 0.0835, below_floor=True)  # -0.0215
    new = row("new", "completed", 0.153, 80_000, 3, score=0.153 - 1, below_floor=True)
    over = row("over", "completed", 0.05, 80_000, 3, score=0.05, below_floor=False)
    ranked = build_leaderboard([old, new, over], "val_miou", max_t=3)
    assert [r["trial_id"] for r in ranked] == ["over", "new", "old"]
    assert ranked[2]["score"] == pytest.approx(0.062 - 1) and ranked[0]["score"] == 0.05


def test_csv_round_trip(tmp_path: Path) -> None:
    ranked = build_leaderboard(make_rows(), "pareto", max_t=3)
    ranked[0]["distill.feature_weight"] = 1.5  # an extra searched key
    ranked[1]["error"] = 'line one, "quoted"\nline two'
    path = write_leaderboard_csv(ranked, tmp_path / "sweep" / "leaderboard.csv")
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    header = path.read_text().splitlines()[0].split(",")
    assert (
        header[: len(LEADERBOARD_COLUMNS)] == LEADERBOARD_COLUMNS and header[-1] == "distill.feature_weight"
    )
    back = read_leaderboard_csv(path)
    assert len(back) == len(ranked)
    for orig, got in zip(ranked, back, strict=True):
        for key in leaderboard_columns(ranked):
            want = orig.get(key)
            if isinstance(want, float) and math.isnan(want):
                assert math.isnan(got[key])
            else:
                assert got[key] == want, key
                assert type(got[key]) is type(want), key
    assert isinstance(back[0]["rank"], int) and isinstance(back[0]["pareto"], bool)
    assert back[0]["distill.feature_weight"] == 1.5


def test_render_leaderboard() -> None:
    ranked = build_leaderboard(make_rows(), "iou_per_mparam", max_t=3)
    table = render_leaderboard(ranked, max_rows=3)
    assert table.row_count == 3 and "4 more" in str(table.caption)
    console = Console(width=160, record=True)
    console.print(table)
    text = console.export_text()
    assert "small" in text and "Unet/resnet34 -> Unet/resnet18" in text and "2.00" in text


def test_plot_pareto_writes_png(tmp_path: Path) -> None:
    ranked = build_leaderboard(make_rows(), "pareto", max_t=3)
    path = plot_pareto(ranked, tmp_path / "plots" / "pareto.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    empty = plot_pareto([row("e", "error", None, 1, 0)], tmp_path / "empty.png")
    assert empty.stat().st_size > 0
