"""``kdseg report SWEEP_DIR``: the whole sweep on one page, offline; and a W&B Report when online.

:func:`write_report` always writes ``SWEEP_DIR/report.html``: one self-contained file (plots are
PNG data URIs, plain HTML and CSS, no external asset) holding

1. the summary (best student, its teacher, the no-KD baseline) and the leaderboard;
2. the Pareto front: val mIoU against student parameters (log x), front highlighted, no-KD
   baselines marked (:func:`kdseg.report.pareto.plot_pareto`);
3. learning curves of every trial (student val mIoU and training loss per epoch), ASHA's rungs
   drawn and every trial ASHA stopped ending in a cross;
4. the effect of each searched key on val mIoU (one panel per key of the search space);
5. per-class IoU of the best student against its teacher and against the no-KD baseline;
6. sample predictions of the best student and its layer-wise activations next to its teacher's
   (the PNGs :class:`kdseg.visualize.EpochImages` wrote in the trial's ``run/images/``);
7. hardware and speed per trial (images/s, epoch time, peak memory, W&B system metrics);
8. where the W&B runs are and how to upload them.

Sources: ``leaderboard.csv``, ``sweep.yaml``, and per trial ``tune/<trial_id>/run/`` (``config.yaml``,
``metrics.jsonl``, ``images/``, ``wandb/``). A small inline script marks the page once every image
has decoded (``<body data-images=N data-rendered=M>``), which the headless browser test reads.

When W&B is online (:func:`kdseg.tracking.resolve_mode` says so and the sweep logged online runs)
:func:`publish_wandb_report` also saves a W&B Report (package ``wandb-workspaces``) with the same
comparisons - scatter of ``student_params`` vs ``val_miou``, parallel coordinates over the searched
keys, parameter importance, a run comparer - and prints its URL. :func:`wandb_report_spec` builds
that report without touching the network.
"""

from __future__ import annotations

import time
from pathlib import Path

from kdseg.fileio import atomic_write
from kdseg.layout import (
    REPORT_FILE,
)
from kdseg.report.assets import CSS, LOAD_CHECK
from kdseg.report.load import SweepData, load_sweep
from kdseg.report.plots import (
    _trial_label,
    curves_png,
    effects_png,
    loss_key,
    pareto_png,
    per_class_png,
    per_class_series,
)
from kdseg.report.sections import (
    _esc,
    _figure_html,
    _hardware_html,
    _leaderboard_html,
    _per_class_caption,
    _per_class_table,
    _samples_html,
    _summary_html,
    _wandb_html,
    val_vs_test_html,
)


def render_html(sd: SweepData, wandb_url: str | None = None) -> str:
    """The report page (see the module docstring)."""
    best, baseline = sd.best, sd.baseline
    sections: list[tuple[str, str, str]] = []
    sections.append(("summary", "Summary", _summary_html(sd, best, baseline)))
    sections.append(
        (
            "leaderboard",
            "Leaderboard",
            f'<p class="note">Ranked by {_esc(sd.spec.sweep.objective)}: trials that ran all {sd.spec.max_t} epochs '
            "and reached the quality floor first, then those that ran all epochs under the floor, then those ASHA "
            "stopped, then failures. Blue: best; red background: no-KD control; grey: stopped; "
            "&#9733;: on the Pareto front (full-budget trials over the floor). Hover a failed row for its error.</p>"
            + _leaderboard_html(sd, best),
        )
    )
    if (val_test := val_vs_test_html(sd)) is not None:
        sections.append(("val-vs-test", "Validation vs test", val_test))
    sections.append(
        (
            "pareto",
            "Pareto front",
            _figure_html(
                pareto_png(sd),
                "Pareto front",
                "pareto",
                "val mIoU against student parameters (log scale). Blue: the Pareto front (no smaller student "
                "is as accurate); red cross: no-KD baseline; grey: other trials.",
            ),
        )
    )
    sections.append(
        (
            "curves",
            "Learning curves",
            _figure_html(
                curves_png(sd),
                "learning curves",
                "curves",
                "Every trial, per epoch. Dotted verticals: ASHA rungs (where it compares trials); a black cross: "
                "the trial ASHA stopped there. Dashed: no-KD baselines. "
                + (
                    "Right: the student's cross-entropy on the labels, comparable across trials (the total "
                    "loss weighs it by 1 - alpha and adds alpha T<sup>2</sup> KL, so totals of different "
                    "alpha/T are not on one scale; with alternation, CE-free steps count as 0)."
                    if loss_key(sd) == "train_loss_hard"
                    else "Right: the total training loss, as logged; its scale depends on alpha and T, so "
                    "trials with different alpha/T are not comparable on it (no CE part was logged)."
                ),
            ),
        )
    )
    from kdseg.report.kd import kd_section_html

    kd_html = kd_section_html(sd)
    if kd_html:
        sections.append(("kd-gain", "What KD bought", kd_html))
    sections.append(
        (
            "effects",
            "Effect of each searched key",
            _figure_html(
                effects_png(sd),
                "effects",
                "effects",
                "Final val mIoU of each distilled trial against the value it took (stopped trials have fewer "
                "epochs, so compare filled points first). No-KD controls are not search points and are left out.",
            ),
        )
    )
    if best is not None:
        series = per_class_series(best, baseline, sd.best_kd)
        per_class = per_class_png(series, sd.class_names)
        sections.append(
            (
                "per-class",
                "Per-class IoU",
                _figure_html(
                    per_class,
                    "per-class IoU",
                    "per-class",
                    _per_class_caption(best, baseline, sd.best_kd),
                )
                + (_per_class_table(series, sd.class_names) if per_class else ""),
            )
        )
        shown = [(best, "Best student")]
        if best.is_baseline and sd.best_kd is not None:
            shown.append((sd.best_kd, "Best distilled student"))
        for trial, title in shown:
            sections.append(
                (
                    f"samples-{_esc(trial.trial_id)}",
                    f"{title}: predictions and layers (trial {_esc(trial.trial_id)}, {_esc(_trial_label(trial))})",
                    _samples_html(trial, sd.sweep_dir),
                )
            )
    sections.append(
        (
            "hardware",
            "Hardware and speed",
            '<p class="note">images/s: training throughput; peak RSS: the trial process\'s peak resident memory; '
            "W&amp;B columns: W&amp;B's system-metric samples of that run.</p>" + _hardware_html(sd),
        )
    )
    sections.append(("wandb", "Weights &amp; Biases", _wandb_html(sd, wandb_url)))

    nav = "".join(f'<a href="#{sid}">{title}</a>' for sid, title, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{title}</h2>{content}</section>' for sid, title, content in sections
    )
    when = time.strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>kdseg sweep {_esc(sd.name)}</title>'
        f"<style>{CSS}</style></head><body>"
        f'<h1>kdseg sweep: {_esc(sd.name)}</h1><p class="note">generated {when} by <code>kdseg report</code></p>'
        f"<nav>{nav}</nav>{body}{LOAD_CHECK}</body></html>\n"
    )


def write_report(sweep_dir: str | Path, out: str | Path | None = None, wandb_url: str | None = None) -> Path:
    """Write ``report.html`` (default ``SWEEP_DIR/report.html``) atomically; returns its path."""
    sd = load_sweep(sweep_dir)
    path = Path(out) if out else sd.sweep_dir / REPORT_FILE
    page = render_html(sd, wandb_url)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


__all__ = ["render_html", "write_report"]
