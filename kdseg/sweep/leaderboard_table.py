"""The leaderboard as a terminal table (rich): what ``kdseg-sweep`` prints at the end of a sweep."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from kdseg.sweep.selection import as_number


def _fmt(v: Any, spec: str) -> str:
    f = as_number(v)
    return "-" if f is None else format(f, spec)


def _label_cell(label: str) -> str:
    """A control's label, ``baseline (lightweight_unet@0.5)``, as ``baseline: lightweight_unet@0.5``: it wraps
    after the colon with the student's name whole (in parentheses the name is two characters wider than the
    column an 80-column terminal leaves it)."""
    m = re.fullmatch(r"(.+?) \((.+)\)", label)
    return f"{m[1]}: {m[2]}" if m else label


def _has(rows: Sequence[Mapping[str, Any]], key: str) -> bool:
    return any(as_number(r.get(key)) is not None for r in rows)


def render_leaderboard(
    rows: Sequence[Mapping[str, Any]], max_rows: int = 20, title: str | None = "Leaderboard"
):
    """A compact :class:`rich.table.Table` of the first ``max_rows`` rows, best first; whole at 80 columns.

    The pair column shows the space's ``label`` when rows carry one, else ``teacher -> student``; it and
    ``sites`` (shown only when rows differ in it) wrap at their spaces, every other column stays whole.
    ``gain`` appears when rows carry a ``kd_gain``; the caption explains the marker column. Other row
    keys are ignored.
    """
    from rich.table import Table

    shown = rows[:max_rows]
    sites = len({str(r.get("distill_site")) for r in shown if r.get("distill_site")}) > 1
    gain = _has(shown, "kd_gain")
    floor = any(r.get("below_floor") is True for r in shown)
    labels = any(r.get("label") for r in shown)
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=None,
        pad_edge=False,
        padding=(0, 1, 0, 0),  # one space between columns
    )
    cells: list[tuple[str, ...]] = []
    for r in shown:
        params = as_number(r.get("student_params"))
        status = str(r.get("status", ""))
        if status == "stopped" and r.get("epochs") is not None:  # ASHA stopped it after this epoch
            status = f"stopped@{r.get('epochs')}"
        pair = f"{r.get('teacher') or '-'} -> {r.get('student') or '-'}"
        cells.append(
            (
                str(r.get("trial_id", "")),
                status,
                _label_cell(str(r.get("label") or pair)) if labels else pair,
                _fmt(r.get("temperature"), ".2f"),
                _fmt(r.get("alpha"), ".2f"),
                *([str(r.get("distill_site") or "-").replace("+", "+ ")] if sites else []),
                "-" if params is None else f"{params / 1e6:.2f}",
                _fmt(r.get("val_miou"), ".3f"),
                _fmt(r.get("iou_per_mparam"), ".3f"),
                *([_fmt(r.get("kd_gain"), "+.3f")] if gain else []),
                ("*" if r.get("pareto") else "") + ("<" if r.get("below_floor") is True else ""),
            )
        )
    columns = [
        ("trial", "left", None),
        ("status", "left", None),
        ("pair" if labels else "teacher -> student", "left", 8),
        ("T", "right", None),
        ("alpha", "right", None),
        *([("sites", "left", 6)] if sites else []),
        ("Mparam", "right", None),
        ("mIoU", "right", None),
        ("mIoU/M", "right", None),
        *([("gain", "right", None)] if gain else []),
        ("*", "left", None),
    ]
    for j, (name, justify, wraps_to) in enumerate(columns):
        whole = max([len(name)] + [len(c[j]) for c in cells])
        word = max([len(name)] + [len(w) for c in cells for w in c[j].split()])
        table.add_column(
            name,
            justify=justify,
            no_wrap=wraps_to is None,
            overflow="fold",
            min_width=whole if wraps_to is None else min(wraps_to, whole),
            max_width=word if name == "sites" else None,  # one site a line; the room goes to the pair
        )
    styles = {"error": "red", "diverged": "red", "stopped": "dim", "running": "yellow"}
    for r, c in zip(shown, cells, strict=True):
        table.add_row(*c, style=styles.get(str(r.get("status")), None))
    legend = [
        "Best first. * Pareto front: no other trial is more accurate with fewer parameters.",
        "mIoU/M: val mIoU per million student parameters; stopped@N: ASHA stopped it after epoch N.",
    ]
    if gain:
        legend.append("gain: kd_gain, the mIoU gained over the same student trained without KD.")
    if floor:
        legend.append("<: below the quality floor, not eligible to win.")
    if len(rows) > max_rows:
        legend.append(f"... and {len(rows) - max_rows} more (see leaderboard.csv)")
    table.caption = "\n".join(legend)
    table.caption_justify = "left"
    return table
