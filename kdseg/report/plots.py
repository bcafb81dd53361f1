"""The report's figures (matplotlib, Agg): Pareto front, curves, effects of the searched keys, per-class IoU."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from kdseg.report.load import SweepData, Trial, _label_text, trial_value
from kdseg.sweep.selection import as_number

STATUS_COLORS = {
    "completed": "tab:blue",
    "stopped": "0.55",
    "running": "tab:olive",
    "error": "tab:red",
    "diverged": "tab:red",
}


# ----------------------------------------------------------------------------------------- plots


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def pareto_png(sd: SweepData) -> bytes:
    import tempfile

    from kdseg.report.pareto import plot_pareto

    with tempfile.TemporaryDirectory(prefix="kdseg-report-") as tmp:
        path = plot_pareto(sd.rows, Path(tmp) / "pareto.png", title=f"{sd.name}: val mIoU vs. student size")
        return path.read_bytes()


def asha_rungs(spec) -> list[int]:
    """Epochs where ASHA compares trials: grace_period * reduction_factor^k below max_t."""
    a = spec.sweep.asha
    rungs, r = [], int(a.grace_period)
    while r < int(a.max_t) and len(rungs) < 20:
        rungs.append(r)
        r *= max(int(a.reduction_factor), 2)
    return rungs


def _trial_label(t: Trial) -> str:
    r = t.row
    if t.is_baseline:
        return f"{r.get('student')} (no KD)"
    return f"{r.get('teacher')} > {r.get('student')}"


def loss_key(sd: SweepData) -> str:
    """The training loss the curves show: the student's cross-entropy (``train_loss_hard``) when logged.

    The total loss mixes CE and KD terms with weights that depend on alpha and T (``(1 - alpha) CE +
    alpha T^2 KL``), so totals of trials with different alpha/T are not on one scale; the CE part is.
    """
    logged = any(as_number(m.get("train_loss_hard")) is not None for t in sd.trials for m in t.metrics)
    return "train_loss_hard" if logged else "train_loss"


def curves_png(sd: SweepData) -> bytes:
    """Student val mIoU and training CE per epoch for every trial; ASHA rungs and stops marked."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    fig = _figure(13, 4.4)
    fig.set_layout_engine("constrained")  # room for the legend outside the two panels
    ax1, ax2 = fig.subplots(1, 2)
    labels = sorted({_trial_label(t) for t in sd.trials})
    cmap = colormaps["tab10"]
    colors = {lab: cmap(i % 10) for i, lab in enumerate(labels)}
    max_t = sd.spec.max_t
    loss = loss_key(sd)
    loss_title = (
        "student training CE (the hard-label part of the loss)"
        if loss == "train_loss_hard"
        else "student total training loss (not comparable across alpha/T)"
    )
    for t in sd.trials:
        ep = [m.get("epoch") for m in t.metrics]
        color = colors[_trial_label(t)]
        style = "--" if t.is_baseline else "-"
        status = t.row.get("status")
        for ax, key in ((ax1, "val_miou"), (ax2, loss)):
            pts = [(e, as_number(m.get(key))) for e, m in zip(ep, t.metrics, strict=True)]
            pts = [(e, v) for e, v in pts if e is not None and v is not None]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, style, color=color, lw=1.3, alpha=0.85, marker=".", ms=4)
            if status == "stopped" or (status not in ("error", "diverged") and xs[-1] < max_t):
                ax.plot(xs[-1], ys[-1], "x", color="black", ms=7, mew=1.8, zorder=5)
            elif status in ("error", "diverged"):
                ax.plot(xs[-1], ys[-1], "X", color="tab:red", ms=8, zorder=5)
    for ax, title in ((ax1, "student val mIoU"), (ax2, loss_title)):
        for r in asha_rungs(sd.spec):
            ax.axvline(r, color="0.6", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0.8, max_t + 0.2)
        if max_t <= 20:
            ax.set_xticks(range(1, max_t + 1))
    handles = [
        Line2D([], [], color=colors[lab], lw=2, ls="--" if "no KD" in lab else "-", label=lab)
        for lab in labels
    ]
    handles.append(Line2D([], [], color="black", marker="x", ls="", label="stopped by ASHA"))
    if asha_rungs(sd.spec):
        handles.append(Line2D([], [], color="0.6", ls=":", label="ASHA rung"))
    fig.legend(handles=handles, fontsize=7, loc="outside right upper")
    return _png(fig)


def effects_png(sd: SweepData) -> bytes | None:
    """One panel per searched key: the trials' final val mIoU against the value they took."""
    import numpy as np

    keys = list(sd.spec.space)
    if not keys:
        return None
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = _figure(4.2 * ncols, 3.3 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    rng = np.random.default_rng(0)
    for ax, key in zip(axes, keys, strict=False):
        d = sd.spec.space[key]
        pts = []
        for t in sd.trials:
            if t.row.get("control"):  # a no-KD control is not a search point: no searched key applies to it
                continue
            y = as_number(t.row.get("val_miou"))
            x = trial_value(d, key, t.config, t.params)
            if y is not None and x is not None:
                pts.append((x, y, t))
        if d.categorical:
            cats = [_label_text(lab) for lab in d.labels]
            for x, _, _ in pts:
                if x not in cats:
                    cats.append(x)
            pos = {c: i for i, c in enumerate(cats)}
            for x, y, t in pts:
                _scatter_trial(ax, pos[x] + rng.uniform(-0.12, 0.12), y, t, sd.spec.max_t)
            for c in cats:
                ys = [y for x, y, _ in pts if x == c]
                if ys:
                    ax.plot([pos[c] - 0.3, pos[c] + 0.3], [np.mean(ys)] * 2, color="black", lw=1.5)
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels([c if len(c) <= 18 else c[:17] + "..." for c in cats], fontsize=7, rotation=15)
            ax.set_xlim(-0.6, len(cats) - 0.4)
        else:
            for x, y, t in pts:
                _scatter_trial(ax, x, y, t, sd.spec.max_t)
            if d.log:
                from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            if d.low is not None and d.high is not None:
                lo, hi = float(d.low), float(d.high)
                pad = (hi / lo) ** 0.05 if d.log and lo > 0 else None
                ax.set_xlim(
                    *((lo / pad, hi * pad) if pad else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)))
                )
        ax.set_title(f"{key} ({d.kind})", fontsize=9)
        ax.set_ylabel("final val mIoU", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[len(keys) :]:
        ax.set_axis_off()
    fig.suptitle(
        "effect of each searched key (filled: ran all epochs; hollow: stopped by ASHA; bar: mean)", fontsize=9
    )
    fig.tight_layout()
    return _png(fig)


def _scatter_trial(ax, x, y, t: Trial, max_t: int) -> None:
    full = (as_number(t.row.get("epochs")) or 0) >= max_t
    color = "tab:red" if t.is_baseline else "tab:blue"
    marker = "X" if t.is_baseline else "o"
    ax.scatter(
        [x],
        [y],
        s=36,
        marker=marker,
        facecolors=color if full else "none",
        edgecolors=color,
        linewidths=1.2,
        zorder=3,
    )


def _epochs(t: Trial) -> str:
    n = t.last.get("epoch")
    return "" if n is None else f", {n} epoch{'s' if n != 1 else ''}"


def per_class_series(
    best: Trial, baseline: Trial | None, best_kd: Trial | None
) -> list[tuple[str, list, str]]:
    """(label, per-class IoU, colour): the best student, its teacher, the no-KD baseline (and, when the
    best student is itself a baseline, the best distilled student and its teacher)."""
    series: list[tuple[str, list, str]] = []
    s = best.last.get("student_per_class_iou")
    if not s:
        return []
    series.append((f"best student: {_trial_label(best)}{_epochs(best)}", s, "tab:blue"))
    kd = best if not best.is_baseline else best_kd
    if kd is not None and kd is not best and kd.last.get("student_per_class_iou"):
        series.append(
            (
                f"best KD student: {_trial_label(kd)}{_epochs(kd)}",
                kd.last["student_per_class_iou"],
                "tab:cyan",
            )
        )
    if kd is not None and kd.last.get("teacher_per_class_iou"):
        series.append(
            (
                f"teacher ({kd.row.get('teacher')}, trial {kd.trial_id}){_epochs(kd)}",
                kd.last["teacher_per_class_iou"],
                "0.55",
            )
        )
    if baseline is not None and baseline is not best and baseline.last.get("student_per_class_iou"):
        series.append(
            (
                f"no-KD baseline: {baseline.row.get('student')}{_epochs(baseline)}",
                baseline.last["student_per_class_iou"],
                "tab:red",
            )
        )
    return series


def per_class_png(series: Sequence[tuple[str, list, str]], class_names: Sequence[str]) -> bytes | None:
    """Grouped horizontal bars of per-class IoU (see :func:`per_class_series`)."""
    import numpy as np

    if not series:
        return None
    n = max(len(v) for _, v, _ in series)
    names = [class_names[i] if i < len(class_names) else f"class_{i}" for i in range(n)]
    fig = _figure(8.5, 0.16 * n * len(series) + 1.6)
    ax = fig.subplots()
    h = 0.8 / len(series)
    y = np.arange(n)
    for k, (label, vals, color) in enumerate(series):
        v = np.array(
            [
                as_number(x) if i < len(vals) and as_number(x) is not None else np.nan
                for i, x in enumerate(vals)
            ]
            + [np.nan] * (n - len(vals))
        )
        ax.barh(
            y + (k - (len(series) - 1) / 2) * h, np.nan_to_num(v, nan=0.0), height=h, color=color, label=label
        )
        for i in np.where(np.isnan(v))[0]:
            ax.text(
                0.005, y[i] + (k - (len(series) - 1) / 2) * h, "absent", fontsize=6, va="center", color="0.4"
            )
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU (validation, last epoch)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("per-class IoU", fontsize=10)
    fig.tight_layout()
    return _png(fig)
