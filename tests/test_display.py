"""What a person sees in an 80x24 terminal: the live trial table and the final leaderboard."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from kdseg.sweep.leaderboard_table import render_leaderboard
from kdseg.sweep.progress import COLUMNS, LiveTrialTable
from kdseg.sweep.ranking import build_leaderboard


@dataclass
class FakeTrial:  # the attributes of ray.tune.experiment.Trial the table reads
    trial_id: str
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    last_result: dict[str, Any] = field(default_factory=dict)


PAIRS = {
    "r34-r18": {"teacher": "Unet/resnet34", "student": "Unet/resnet18", "mode": "online"},
    "r34-effb0": {"teacher": "Unet/resnet34", "student": "Unet/efficientnet-b0", "mode": "online"},
    "r34-lwunet": {"teacher": "Unet/resnet34", "student": "lightweight_unet@1.0", "mode": "online"},
    "baseline": {"teacher": "-", "student": "Unet/resnet18", "mode": "none"},
}


def describe(params: dict[str, Any]) -> dict[str, Any]:
    d = dict(PAIRS[params["pair"]])
    kd = d["mode"] != "none"
    return {**d, "temperature": params["t"] if kd else None, "alpha": params["a"] if kd else None}


def trials() -> list[FakeTrial]:
    out = []
    for i, (pair, status, epoch) in enumerate(
        [
            ("r34-r18", "TERMINATED", 40),
            ("r34-effb0", "TERMINATED", 4),
            ("r34-lwunet", "RUNNING", 12),
            ("baseline", "RUNNING", 3),
            ("r34-r18", "ERROR", 1),
            ("r34-effb0", "PENDING", 0),
        ]
    ):
        result = (
            {
                "epoch": epoch,
                "val_miou": 0.5 + i / 100,
                "teacher_val_miou": 0.61,
                "student_params": 14_328_000,
            }
            if epoch
            else {}
        )
        out.append(FakeTrial(f"8f3a2_{i:05d}", status, {"pair": pair, "t": 3.14159, "a": 0.55}, result))
    return out


def render(renderable, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def assert_whole(lines: list[str], words: list[str]) -> None:
    """Every word appears unbroken on one line, and no line is cut with an ellipsis."""
    for w in words:
        assert any(w in line for line in lines), f"{w!r} is cut or missing:\n" + "\n".join(lines)
    assert not any("…" in line for line in lines), "\n".join(lines)
    assert all(len(line) <= 80 for line in lines)


def test_live_table_reads_whole_at_80_columns() -> None:
    table = LiveTrialTable(max_t=40, num_samples=6, describe=describe, console=Console(file=io.StringIO()))
    ts = trials()
    table.update(ts)
    lines = render(table.table())
    assert_whole(lines, [name for name, _ in COLUMNS] + [t.trial_id for t in ts])
    assert_whole(lines, ["completed", "stopped", "running", "error", "pending", "3.14", "0.55", "14.33M"])
    baseline = next(line for line in lines if "8f3a2_00003" in line)
    assert "3.14" not in baseline and "0.55" not in baseline  # no T or alpha without KD
    assert len(lines) <= 24


def test_live_table_done_counter_agrees_with_rows() -> None:
    table = LiveTrialTable(max_t=40, num_samples=6, describe=describe, console=Console(file=io.StringIO()))
    ts = trials()
    table.update(ts)  # e.g. after a resume: finished trials are counted from their status
    assert table.done == 3  # completed, stopped, error
    # Tune calls on_trial_complete before it marks the trial TERMINATED: the row says so at once
    ts[2].last_result["epoch"] = 40
    table.on_trial_complete(0, ts, ts[2])
    assert table.done == 4 and "4/6 trials done" in "\n".join(render(table.table()))
    assert "completed" in next(line for line in render(table.table()) if "8f3a2_00002" in line)
    # a trial Tune retries after an error is running again, not done
    table.on_trial_recover(0, ts, ts[4])
    ts[4].status = "RUNNING"
    table.on_trial_result(0, ts, ts[4], {})
    assert table.done == 3
    text = "\n".join(render(table.table()))
    assert "3/6 trials done" in text and sum(w in text for w in ("completed", "stopped")) == 2


def test_live_table_clock_moves_without_trial_events() -> None:
    now = [100.0]
    table = LiveTrialTable(max_t=40, num_samples=6, describe=describe, console=Console(file=io.StringIO()))
    table._clock = lambda: now[0]
    table._started = 100.0
    table.update(trials())
    assert "0:00 elapsed" in render(table.table())[0]
    now[0] += 75  # no Tune event in between: the table is drawn from the same rows, later
    assert "1:15 elapsed" in render(table.table())[0]


def test_live_display_refreshes_itself() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    table = LiveTrialTable(max_t=40, num_samples=6, describe=describe, console=console)
    table.__class__ = type("Tty", (LiveTrialTable,), {"interactive": property(lambda self: True)})
    now = [0.0]
    table._clock, table._started = (lambda: now[0]), 0.0
    ts = trials()
    table.on_trial_start(0, ts, ts[0])
    try:
        live = table._live
        assert live is not None and live.auto_refresh and live.refresh_per_second >= 1
        now[0] = 3.0  # what Live's own refresh thread draws, between two Tune events
        assert "0:03 elapsed" in render(live.get_renderable())[0]
        now[0] = 64.0
        assert "1:04 elapsed" in render(live.get_renderable())[0]
    finally:
        table.on_experiment_end(ts)
    assert table._live is None and "8f3a2_00005" in console.file.getvalue()


def leaderboard_rows(extra: bool) -> list[dict[str, Any]]:
    rows = []
    for i, t in enumerate(trials()):
        d = describe(t.config)
        r = {
            "trial_id": t.trial_id,
            "status": ["completed", "stopped", "completed", "completed", "error", "stopped"][i],
            "teacher": d["teacher"],
            "student": d["student"],
            "temperature": d["temperature"],
            "alpha": d["alpha"],
            "distill_site": (["logits", "logits+decoder"][i % 2] if extra else "logits")
            if d["mode"] != "none"
            else None,
            "student_params": [14_328_000, 6_250_000, 1_960_000, 14_328_000, None, 6_250_000][i],
            "val_miou": [0.61, 0.52, 0.55, 0.58, None, 0.4][i],
            "epochs": [40, 4, 40, 40, 1, 12][i],
        }
        if extra:  # columns the ranking may add (issue 13): tolerated, shown compactly
            r |= {"label": "r34-r18", "kd_gain": 0.031 - i / 100, "below_floor": i == 2, "foo": "x" * 50}
        rows.append(r)
    return build_leaderboard(rows, "iou_per_mparam", max_t=40)


def test_leaderboard_reads_whole_at_80_columns() -> None:
    for extra in (False, True):
        rows = leaderboard_rows(extra)
        lines = render(render_leaderboard(rows, title="leaderboard: backbones"))
        headers = ["trial", "status", "T", "alpha", "Mparam", "mIoU", "mIoU/M", "*"]
        headers += ["pair", "sites", "gain"] if extra else ["teacher ->"]  # sites only when they differ
        assert_whole(lines, headers + [r["trial_id"] for r in rows] + ["stopped@12", "0.610", "14.33"])
        text = "\n".join(lines)
        if extra:
            assert "r34-r18" in text and "logits+" in text and "decoder" in text
        else:  # the pair wraps between teacher and student, never inside a name
            assert "sites" not in text and "teacher -> student" in text.replace("\n", " ").replace("  ", "")
            assert_whole(lines, ["lightweight_unet@1.0", "Unet/efficientnet-b0", "Unet/resnet34 ->"])
        assert "* Pareto front" in text  # the marker column is explained
        assert ("below the quality floor" in text) is extra and ("+0.031" in text) is extra


def test_leaderboard_caption_counts_hidden_rows() -> None:
    rows = leaderboard_rows(False)
    lines = render(render_leaderboard(rows, max_rows=2))
    assert "... and 4 more (see leaderboard.csv)" in "\n".join(lines)
    assert sum(r["trial_id"] in "\n".join(lines) for r in rows) == 2


def test_sweep_summary_commands_stay_whole_at_80_columns(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    from kdseg.cli.sweep import _print_sweep_result

    monkeypatch.chdir(tmp_path)
    sweep_dir = tmp_path / "runs" / "quickstart-20261201-154000"
    for i in range(3):
        (
            sweep_dir / "tune" / f"8f3a2_0000{i}" / "wandb" / f"offline-run-20261201_154{i}00-8f3a2_0000{i}"
        ).mkdir(parents=True)
    (sweep_dir / "best_config.yaml").write_text("name: x\n")
    result = SimpleNamespace(
        sweep_dir=sweep_dir,
        leaderboard=leaderboard_rows(False),
        best_config=sweep_dir / "best_config.yaml",
        wall_time_s=123.0,
    )
    console = Console(width=80, record=True, file=io.StringIO(), color_system=None)
    assert _print_sweep_result(result, console=console) == 0
    lines = console.export_text().splitlines()
    sync = "wandb sync runs/quickstart-20261201-154000/tune/*/wandb/offline-run-*"
    assert any(line.strip() == sync for line in lines), "\n".join(lines)  # one line, not wrapped mid-word
    assert "report: kdseg report runs/quickstart-20261201-154000" in lines
    assert "best config: runs/quickstart-20261201-154000/best_config.yaml" in lines
    assert all(len(line) <= 80 for line in lines)


def test_a_controls_label_keeps_the_students_name_whole_at_80_columns() -> None:
    """The quickstart's leaderboard: a control's label ``baseline (<student>)`` is shown as ``baseline:
    <student>``, which wraps after the colon with the name whole (``(lightweight_unet@0.5)`` is wider
    than the column)."""
    students = ["Unet/resnet18", "lightweight_unet@0.5"]
    rows = [
        {
            "trial_id": f"741cd0e{i}",
            "status": "completed",
            "teacher": "Unet/resnet34",
            "student": s,
            "label": label,
            "temperature": t,
            "alpha": a,
            "student_params": p,
            "val_miou": v,
            "epochs": 4,
        }
        for i, (s, label, t, a, p, v) in enumerate(
            [
                (students[0], "r34-r18", 4.0, 0.5, 14_328_000, 0.128),
                (students[0], f"baseline ({students[0]})", None, None, 14_328_000, 0.110),
                (students[1], f"baseline ({students[1]})", None, None, 300_000, 0.054),
                (students[1], "r34-lwunet0.5", 2.5, 0.7, 300_000, 0.026),
            ]
        )
    ]
    for r in rows:
        r["mode"] = "none" if r["label"].startswith("baseline") else "online"
        r["kd_gain"] = None if r["mode"] == "none" else 0.018
    lines = render(render_leaderboard(build_leaderboard(rows, "iou_per_mparam", max_t=4)))
    assert "baseline:" in "\n".join(lines)
    assert_whole(lines, students + ["r34-lwunet0.5"])
    assert not [ln for ln in lines if ln.strip().startswith(")")], "\n".join(lines)  # no bracket left alone
