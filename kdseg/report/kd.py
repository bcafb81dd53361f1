"""The report's "What KD bought" section: every distilled student against its no-KD control.

A sweep's no-KD controls (:func:`kdseg.space.controls`) train each distinct student alone, at the full
budget. For each student that has a control, this section shows its distilled trials' val mIoU curves
against the control's, and a table of ``kd_gain`` (a KD trial's val mIoU minus the control's at the
same epoch, as in ``leaderboard.csv``): what distillation bought that student, measured on the
validation split the sweep selected on (so the best gain is an optimistic estimate; the mean over
full-budget KD trials is the fairer one).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from kdseg.sweep.ranking import as_number

__all__ = ["kd_gain_rows", "kd_section_html", "kd_curves_png"]


def _students(sd) -> list[tuple[str, Any, list[Any]]]:
    """``(student, control trial, KD trials)`` for every student that has a control."""
    out = []
    for control in sd.trials:
        if not control.row.get("control") or control.row.get("status") in ("error", "diverged"):
            continue
        student = control.row.get("student")
        kd = [t for t in sd.trials if not t.is_baseline and t.row.get("student") == student]
        out.append((str(student), control, kd))
    return out


def _at(trial, epoch: Any, key: str = "val_miou") -> float | None:
    for m in trial.metrics:
        if m.get("epoch") == epoch:
            return as_number(m.get(key))
    return None


def kd_gain_rows(sd) -> list[dict[str, Any]]:
    """One summary per student with a control: its control, best and mean full-budget KD gain."""
    max_t = sd.spec.max_t
    rows = []
    for student, control, kd in _students(sd):
        full = [t for t in kd if (as_number(t.row.get("epochs")) or 0) >= max_t]
        gains = [as_number(t.row.get("kd_gain")) for t in full]
        gains = [g for g in gains if g is not None]
        best = max(full, key=lambda t: as_number(t.row.get("kd_gain")) or -1e9, default=None)
        rows.append(
            {
                "student": student,
                "control": control.trial_id,
                "control_val_miou": as_number(control.row.get("val_miou")),
                "kd_trials": len(kd),
                "full_budget": len(full),
                "best_trial": best.trial_id if best is not None else None,
                "best_val_miou": as_number(best.row.get("val_miou")) if best is not None else None,
                "best_gain": max(gains) if gains else None,
                "mean_gain": sum(gains) / len(gains) if gains else None,
                "helped": sum(g > 0 for g in gains),
            }
        )
    return rows


def kd_curves_png(sd) -> bytes | None:
    """One panel per student with a control: KD trials' val mIoU curves against the control's."""
    from kdseg.report.plots import _figure, _png

    groups = [g for g in _students(sd) if g[2]]
    if not groups:
        return None
    n = len(groups)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = _figure(4.6 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    max_t = sd.spec.max_t
    for ax, (student, control, kd) in zip(axes, groups, strict=False):
        for t in kd:
            pts = [(m.get("epoch"), as_number(m.get("val_miou"))) for m in t.metrics]
            pts = [(e, v) for e, v in pts if e is not None and v is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                full = xs[-1] >= max_t
                ax.plot(
                    xs,
                    ys,
                    "-",
                    color="tab:blue",
                    lw=1.4 if full else 0.8,
                    alpha=0.9 if full else 0.45,
                    marker="o",
                    ms=3.5 if full else 3,
                )
        pts = [(m.get("epoch"), as_number(m.get("val_miou"))) for m in control.metrics]
        pts = [(e, v) for e, v in pts if e is not None and v is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "--", color="tab:red", lw=2.2, marker="X", ms=5, label="no KD (control)")
        ax.plot([], [], "-", color="tab:blue", lw=1.4, label="KD trials (faint: stopped early)")
        ax.set_title(student, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("val mIoU", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        if max_t <= 20:
            ax.set_xticks(range(1, max_t + 1))
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.tight_layout()
    return _png(fig)


def _fmt(x: Any, spec: str) -> str:
    v = as_number(x)
    return "-" if v is None else format(v, spec)


def _table(rows: Sequence[dict[str, Any]], max_t: int) -> str:
    head = (
        "<tr><th class='l'>student</th><th>no-KD val mIoU</th><th>KD trials (full budget)</th>"
        "<th>best KD val mIoU</th><th>best kd_gain</th><th>mean kd_gain</th><th>KD helped</th></tr>"
    )
    body = []
    for r in rows:
        gain_cls = "" if r["best_gain"] is None else ("pos" if r["best_gain"] > 0 else "neg")
        body.append(
            f"<tr><td class='l'>{html.escape(r['student'])}</td><td>{_fmt(r['control_val_miou'], '.4f')}</td>"
            f"<td>{r['kd_trials']} ({r['full_budget']})</td><td>{_fmt(r['best_val_miou'], '.4f')}</td>"
            f"<td class='{gain_cls}'>{_fmt(r['best_gain'], '+.4f')}</td><td>{_fmt(r['mean_gain'], '+.4f')}</td>"
            f"<td>{r['helped']} of {r['full_budget']}</td></tr>"
        )
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>'


def _verdict(rows: Sequence[dict[str, Any]], max_t: int) -> str:
    said = []
    for r in rows:
        if r["best_gain"] is None:
            said.append(
                f"{r['student']}: no distilled trial ran all {max_t} epochs, so there is no fair comparison yet."
            )
        elif r["best_gain"] > 0:
            said.append(
                f"{r['student']}: distillation bought up to {r['best_gain']:+.4f} val mIoU over the student "
                f"alone (mean {r['mean_gain']:+.4f} over {r['full_budget']} full-budget KD trials)."
            )
        else:
            said.append(
                f"{r['student']}: no distilled trial beat the student alone ({r['best_gain']:+.4f} at best): "
                f"at this budget, train it without a teacher, or give it a stronger one."
            )
    return "".join(f"<li>{html.escape(s)}</li>" for s in said)


def kd_section_html(sd) -> str | None:
    """The section's HTML (a verdict per student, the table and the curves), or None without controls."""
    from kdseg.report.sections import _figure_html

    rows = kd_gain_rows(sd)
    if not rows:
        return None
    max_t = sd.spec.max_t
    note = (
        '<p class="note">Each student the sweep distils into is also trained alone (its no-KD control: full '
        f"budget of {max_t} epochs, never stopped early, never resampled). kd_gain = a KD trial's val mIoU minus "
        "the control's at the same epoch. Measured on the validation split the sweep selected on: the best gain "
        "is optimistic, the mean is fairer; a held-out test split answers it without bias.</p>"
    )
    figure = _figure_html(
        kd_curves_png(sd),
        "what KD bought",
        "kd-gain",
        "val mIoU per epoch: each KD trial (blue) against the same student trained alone (red, dashed).",
    )
    return f"{note}<ul>{_verdict(rows, max_t)}</ul>{_table(rows, max_t)}{figure}"
