"""The report's HTML sections: leaderboard, summary, hardware, W&B links, sample images."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdseg.report.assets import TABLE_JS
from kdseg.report.load import SweepData, Trial
from kdseg.report.plots import _trial_label
from kdseg.sweep.selection import as_number


def _esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(x: Any, spec: str = ".4f") -> str:
    f = as_number(x)
    return "-" if f is None else format(f, spec)


def _img(data: bytes, alt: str, plot: str, lazy: bool = False) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    how = ' loading="lazy" decoding="async"' if lazy else ""
    return f'<img data-plot="{_esc(plot)}" alt="{_esc(alt)}"{how} src="data:image/png;base64,{b64}">'


def palette_png(data: bytes, colors: int = 256) -> bytes:
    """``data`` (a PNG) with an adaptive palette of ``colors`` colours when that is smaller: the sample
    images embedded in the report shrink about 3x (measured: 362 -> 103 KB for a layers image)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        small = im.convert("RGB").quantize(colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        small.save(buf, format="PNG", optimize=True)
    return buf.getvalue() if buf.tell() < len(data) else data


def _figure_html(data: bytes | None, alt: str, plot: str, caption: str, lazy: bool = False) -> str:
    if not data:
        return f'<p class="note">{_esc(caption)}: nothing to plot.</p>'
    return f"<figure>{_img(data, alt, plot, lazy)}<figcaption>{caption}</figcaption></figure>"


def _leaderboard_html(sd: SweepData, best: Trial | None) -> str:
    cols = [
        ("#", "rank", None),
        ("trial", "trial_id", "l"),
        ("status", "status", "l"),
        ("teacher", "teacher", "l"),
        ("student", "student", "l"),
        ("mode", "mode", "l"),
        ("T", "temperature", ".2f"),
        ("alpha", "alpha", ".2f"),
        ("sites", "distill_site", "l"),
        ("alternation", "alternation", "l"),
        ("params (M)", "student_params", "M"),
        ("val mIoU", "val_miou", ".4f"),
        ("teacher mIoU", "teacher_val_miou", ".4f"),
        ("kd_gain", "kd_gain", "+.4f"),
        ("score", "score", ".4f"),
        ("under floor", "below_floor", "!"),
        ("IoU / M params", "iou_per_mparam", ".4f"),
        ("epochs", "epochs", "d"),
        ("Pareto", "pareto", "*"),
    ]
    head = "".join(f'<th class="{"l" if f == "l" else ""}">{_esc(n)}</th>' for n, _, f in cols)
    body = []
    for r in sd.rows:
        cls = []
        if best is not None and str(r.get("trial_id")) == best.trial_id:
            cls.append("best")
        if r.get("mode") == "none":
            cls.append("baseline")
        if r.get("status") in ("error", "diverged"):
            cls.append("failed")
        elif r.get("status") == "stopped":
            cls.append("stopped")
        cells = []
        for _, key, f in cols:
            v = r.get(key)
            n = as_number(v) if f not in ("l", "*") else None
            sort = f' data-v="{n!r}"' if n is not None else (f' data-v="{int(bool(v))}"' if f == "*" else "")
            if f == "l":
                cells.append(f'<td class="l">{_esc(v if v is not None else "-")}</td>')
            elif f == "M":
                cells.append(f"<td{sort}>{_fmt(None if n is None else n / 1e6, '.2f')}</td>")
            elif f == "d":
                cells.append(f"<td{sort}>{_esc(v if v is not None else '-')}</td>")
            elif f == "*":
                cells.append(f"<td{sort}>{'&#9733;<span hidden>pareto</span>' if v else ''}</td>")
            elif f == "!":
                cells.append(f"<td{sort}>{'under' if v else ''}</td>")
            elif f is None:
                cells.append(f"<td{sort}>{_esc(v)}</td>")
            else:
                cells.append(f"<td{sort}>{_fmt(v, f)}</td>")
        title = f' title="{_esc(r.get("error"))}"' if r.get("error") else ""
        body.append(f'<tr class="{" ".join(cls)}"{title}>{"".join(cells)}</tr>')
    tools = (
        '<p class="tools"><input type="search" id="lb-filter" placeholder="filter: e.g. completed resnet18" '
        'aria-label="filter the leaderboard"> <span id="lb-count"></span> '
        '<span class="note">click a column header to sort</span></p>'
    )
    table = f'<table id="lb"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'{tools}<div class="scroll">{table}</div>{TABLE_JS}'


def _objective_text(s) -> str:
    """How the winner is chosen, in the words of kdseg.selection."""
    floor = (
        f"a trial counts only at &ge; {s.quality_floor:g} &times; its teacher's val mIoU (the quality floor)"
        if s.quality_floor > 0
        else "no quality floor"
    )
    if s.objective == "pareto":
        return f"pareto: val mIoU up, {_esc(s.cost)} down (a multi-objective Optuna study, no early stopping); {floor}"
    return (
        f"{_esc(s.objective)}; {floor}; the study, TPE, ASHA (max_t {s.asha.max_t}, grace "
        f"{s.asha.grace_period}, reduction {s.asha.reduction_factor:g}) and this ranking all use the same score"
        + (
            "; under the floor the score is val mIoU &minus; 1, the student's own quality"
            if s.quality_floor > 0
            else ""
        )
    )


def val_vs_test_html(sd: SweepData) -> str | None:
    """The rows ``sweep.final_eval`` measured on the test split: val mIoU, test mIoU and the gap; None
    when the sweep has no test numbers."""
    rows = [r for r in sd.rows if as_number(r.get("test_miou")) is not None]
    if not rows:
        return None
    body = []
    for r in rows:
        val, test = as_number(r.get("val_miou")), as_number(r.get("test_miou"))
        gap = None if val is None else test - val
        params = as_number(r.get("student_params"))
        body.append(
            f"<tr><td>{_esc(r.get('rank'))}</td><td class='l'>{_esc(r.get('trial_id'))}</td>"
            f"<td class='l'>{_esc(r.get('student') or '-')}</td>"
            f"<td>{_fmt(None if params is None else params / 1e6, '.2f')}</td>"
            f"<td>{_fmt(val)}</td><td>{_fmt(test)}</td><td>{_fmt(gap, '+.4f')}</td></tr>"
        )
    head = "".join(
        f"<th{' class=l' if n in ('trial', 'student') else ''}>{n}</th>"
        for n in ("#", "trial", "student", "params (M)", "val mIoU", "test mIoU", "gap")
    )
    note = (
        '<p class="note">sweep.final_eval: the chosen trials measured once on the test split, after the '
        "ranking was final; test numbers never feed selection. gap = test - val: validation picked these "
        "trials, so their val mIoU is biased upward and a negative gap is expected.</p>"
    )
    return (
        note
        + f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )


def _summary_html(sd: SweepData, best: Trial | None, baseline: Trial | None) -> str:
    s = sd.spec.sweep
    counts: dict[str, int] = {}
    for r in sd.rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    status = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    data = sd.spec.base_config.data
    items = [
        ("sweep", f"{sd.name} ({_esc(sd.sweep_dir)})"),
        ("trials", f"{len(sd.rows)} ({status})"),
        ("objective", _objective_text(s)),
        ("data", f"{data.format}, {data.num_classes} classes, {data.image_size[0]}x{data.image_size[1]}"),
        ("searched", ", ".join(sd.spec.space) or "-"),
    ]
    from kdseg.sweep.teacher_stage import read_teachers

    for t in read_teachers(sd.sweep_dir):  # teacher.checkpoint: train: each teacher trained once, shown once
        items.append(
            (
                "teacher",
                f"{_esc(t['teacher'])}, trained once by the teacher stage ({_esc(t['hash'])}): val mIoU "
                f"<b>{_fmt(t.get('val_miou'))}</b> after {_esc(t['epochs'])} epochs, "
                f"{_fmt((as_number(t.get('params')) or 0) / 1e6, '.2f')} M params",
            )
        )
    if best is not None:
        r = best.row
        kd = (
            ""
            if best.is_baseline
            else f", T {_fmt(r.get('temperature'), '.2f')}, alpha {_fmt(r.get('alpha'), '.2f')}, sites {r.get('distill_site')}"
        )
        items.append(
            (
                "best student",
                f"trial {_esc(best.trial_id)}: {_esc(_trial_label(best))}{_esc(kd)} - val mIoU "
                f"<b>{_fmt(r.get('val_miou'))}</b>, {_fmt((as_number(r.get('student_params')) or 0) / 1e6, '.2f')} M params, "
                f"IoU/Mparam {_fmt(r.get('iou_per_mparam'))}; teacher mIoU {_fmt(r.get('teacher_val_miou'))}",
            )
        )
    if baseline is not None:
        items.append(
            (
                "no-KD baseline",
                f"trial {_esc(baseline.trial_id)}: {_esc(baseline.row.get('student'))} - val mIoU "
                f"{_fmt(baseline.row.get('val_miou'))}, {_fmt((as_number(baseline.row.get('student_params')) or 0) / 1e6, '.2f')} M params",
            )
        )
    rows = "".join(f"<tr><th class='l'>{_esc(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f'<table class="kv">{rows}</table>'


def _per_class_table(series: Sequence[tuple[str, list, str]], class_names: Sequence[str]) -> str:
    n = max((len(v) for _, v, _ in series), default=0)
    head = "<th class='l'>class</th>" + "".join(f"<th>{_esc(label)}</th>" for label, _, _ in series)
    rows = []
    for i in range(n):
        name = class_names[i] if i < len(class_names) else f"class_{i}"
        cells = "".join(
            f"<td>{_fmt(as_number(v[i]) if i < len(v) else None, '.3f')}</td>" for _, v, _ in series
        )
        rows.append(f"<tr><td class='l'>{_esc(name)}</td>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _hardware_html(sd: SweepData) -> str:
    from kdseg.tracking.wandb_records import offline_runs, online_runs, read_offline_run

    head = (
        "<th class='l'>trial</th><th class='l'>teacher &gt; student</th><th>images/s</th><th>epoch time (s)</th>"
        "<th>peak RSS (MB)</th><th>peak GPU (MB)</th><th>W&amp;B samples</th><th>CPU % (W&amp;B)</th>"
        "<th>process RSS max (MB, W&amp;B)</th>"
    )
    rows = []
    for t in sd.trials:

        def mean(key: str, t: Trial = t) -> float | None:
            v = [x for m in t.metrics if (x := as_number(m.get(key))) is not None]
            return sum(v) / len(v) if v else None

        def peak(key: str, t: Trial = t) -> float | None:
            v = [x for m in t.metrics if (x := as_number(m.get(key))) is not None]
            return max(v) if v else None

        n_stats, cpu, rss = 0, None, None
        runs = offline_runs(t.trial_dir) or online_runs(t.trial_dir)
        for p in runs:
            try:
                run = read_offline_run(p)
            except Exception:
                continue
            n_stats += len(run.stats)
            cpus = [c for s in run.stats if (c := as_number(s.get("cpu"))) is not None]
            rsss = [c for s in run.stats if (c := as_number(s.get("proc.memory.rssMB"))) is not None]
            cpu = sum(cpus) / len(cpus) if cpus else cpu
            rss = max(rsss) if rsss else rss
        rows.append(
            f"<tr><td class='l'>{_esc(t.trial_id)}</td><td class='l'>{_esc(_trial_label(t))}</td>"
            f"<td>{_fmt(mean('images_per_s'), '.1f')}</td><td>{_fmt(mean('epoch_time_s'), '.1f')}</td>"
            f"<td>{_fmt(peak('peak_rss_mb'), '.0f')}</td><td>{_fmt(peak('peak_memory_mb'), '.0f')}</td>"
            f"<td>{n_stats if runs else '-'}</td><td>{_fmt(cpu, '.0f')}</td><td>{_fmt(rss, '.0f')}</td></tr>"
        )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _wandb_html(sd: SweepData, wandb_url: str | None) -> str:
    from kdseg.tracking.wandb_records import offline_runs, online_runs, sync_command

    off, on = offline_runs(sd.sweep_dir), online_runs(sd.sweep_dir)
    w = sd.spec.base_config.tracking.wandb
    parts = []
    if wandb_url:
        parts.append(f'<p>W&amp;B Report: <a href="{_esc(wandb_url)}">{_esc(wandb_url)}</a></p>')
    if on:
        parts.append(
            f"<p>{len(on)} online W&amp;B run(s) in project <code>{_esc(w.project)}</code>, group <code>{_esc(sd.name)}</code>.</p>"
        )
    if off:
        parts.append(
            f"<p>{len(off)} offline W&amp;B run folder(s) in the trial folders (<code>tune/&lt;trial&gt;/wandb/</code>). "
            f"Upload them, then run <code>kdseg report</code> again for the W&amp;B Report:</p>"
            f"<pre><code>{_esc(sync_command(sd.sweep_dir))}</code></pre>"
        )
    if not parts:
        parts.append("<p>No W&amp;B runs were logged (tracking.wandb.mode: disabled).</p>")
    return "".join(parts)


def _per_class_caption(best: Trial, baseline: Trial | None, best_kd: Trial | None) -> str:
    text = f"Best student (trial {_esc(best.trial_id)}), last epoch"
    if best.is_baseline:
        text += " - a no-KD baseline; shown with the best distilled student and its teacher"
        if best_kd is None:
            text += " (none in this sweep)"
    else:
        text += ", against its teacher and the no-KD baseline"
        if baseline is None:
            text += " (no baseline trial in this sweep)"
    return text + "."


def _samples_html(trial: Trial, sweep_dir: Path | None = None) -> str:
    """The trial's latest sample images, embedded with a 256-colour palette; each caption links the
    full-resolution file (a path relative to the sweep folder, where report.html is written by default)."""
    from kdseg.tracking.images import latest_images

    imgs = latest_images(trial.run_dir)
    blocks = []
    for kind, caption in (
        ("predictions", "fixed validation images: input | ground truth | teacher | student"),
        (
            "layers",
            "layer by layer, teacher and student side by side; |T - S| shows where the student departs",
        ),
    ):
        p = imgs.get(kind)
        if p is not None and p.stat().st_size > 0:
            epoch = int(p.name.split("_")[1])
            try:
                rel = p.resolve().relative_to(Path(sweep_dir).resolve()).as_posix() if sweep_dir else None
            except ValueError:
                rel = None
            full = f' &middot; <a href="{_esc(rel)}">full resolution</a>' if rel else ""
            text = f"{_esc(caption)} (epoch {epoch}; 256 colours{full})"
            blocks.append(_figure_html(palette_png(p.read_bytes()), kind, kind, text, lazy=True))
    if not blocks:
        blocks.append('<p class="note">This trial wrote no images (tracking.wandb.log_images_every: 0).</p>')
    return "".join(blocks)
