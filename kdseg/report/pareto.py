"""The Pareto figure of a sweep: val mIoU against student parameters, the front connected."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kdseg.fileio import atomic_write
from kdseg.sweep.ranking import pareto_mask
from kdseg.sweep.selection import as_number


def plot_pareto(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """PNG of val_miou against student parameters (log x), front connected, no-KD baselines marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pts = [
        r
        for r in rows
        if as_number(r.get("val_miou")) is not None and (as_number(r.get("student_params")) or 0) > 0
    ]
    front = pareto_mask([r["val_miou"] for r in pts], [r["student_params"] for r in pts])
    if any("pareto" in r for r in pts):  # a built leaderboard's front: full-budget trials over the floor
        front = [bool(r.get("pareto")) for r in pts]

    fig = Figure(figsize=(8.4, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if not pts:
        ax.text(
            0.5, 0.5, "no trial has reported val_miou yet", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_axis_off()
    else:
        groups = {
            "KD trial": [r for r, f in zip(pts, front, strict=True) if not f and r.get("mode") != "none"],
            "Pareto front": [r for r, f in zip(pts, front, strict=True) if f and r.get("mode") != "none"],
            "no-KD baseline": [r for r in pts if r.get("mode") == "none"],
        }
        style = {
            "KD trial": dict(s=22, c="0.6", marker="o", zorder=2),
            "Pareto front": dict(s=50, c="tab:blue", marker="o", edgecolors="black", zorder=4),
            "no-KD baseline": dict(s=70, c="tab:red", marker="X", zorder=5),
        }
        for name, rs in groups.items():
            if rs:
                ax.scatter(
                    [r["student_params"] / 1e6 for r in rs],
                    [r["val_miou"] for r in rs],
                    label=name,
                    **style[name],
                )
        on = sorted((r for r, f in zip(pts, front, strict=True) if f), key=lambda r: r["student_params"])
        ax.plot(
            [r["student_params"] / 1e6 for r in on],
            [r["val_miou"] for r in on],
            color="tab:blue",
            lw=1.2,
            drawstyle="steps-post",
            zorder=3,
        )
        xs = [r["student_params"] for r in pts]
        mid = (min(xs) * max(xs)) ** 0.5  # labels of points right of the middle go to their left
        for r in on:
            right = r["student_params"] > mid
            ax.annotate(
                str(r.get("student") or r.get("trial_id", "")),
                (r["student_params"] / 1e6, r["val_miou"]),
                textcoords="offset points",
                xytext=(-4, 4) if right else (4, 4),
                ha="right" if right else "left",
                fontsize=7,
            )
        ax.set_xscale("log")
        ax.set_xlabel("student parameters (M, log scale)")
        ax.set_ylabel("val mIoU")
        ax.grid(True, which="both", alpha=0.3)
        # outside the axes, to the right: a legend inside would hide markers (the no-KD baselines
        # tend to sit at the small, low end where a corner legend goes)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    ax.set_title(title or "mIoU vs. student size")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path
