"""``kdseg report SWEEP_DIR``: the whole sweep on one page, offline; and a W&B Report when online.

:func:`write_report` always writes ``SWEEP_DIR/report.html``: one self-contained file (plots are
PNG data URIs, plain HTML and CSS, no external asset) holding

1. the summary (best student, its teacher, the no-KD baseline) and the leaderboard;
2. the Pareto front: val mIoU against student parameters (log x), front highlighted, no-KD
   baselines marked (:func:`kdseg.ranking.plot_pareto`);
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

import base64
import html
import io
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdseg.errors import KdsegError
from kdseg.fileio import atomic_write
from kdseg.layout import (
    CONFIG_FILE,
    LEADERBOARD,
    PARAMS_FILE,
    REPORT_FILE,
    SPEC_FILE,
    read_metrics,
    trial_run_dir,
)
from kdseg.sweep.ranking import as_number

STATUS_COLORS = {
    "completed": "tab:blue",
    "stopped": "0.55",
    "running": "tab:olive",
    "error": "tab:red",
    "diverged": "tab:red",
}


# --------------------------------------------------------------------------------------- loading


@dataclass
class Trial:
    """One trial of a sweep: its leaderboard row and what its run folder holds."""

    row: dict[str, Any]
    run_dir: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # Ray Tune's params.json: what was searched

    @property
    def trial_dir(self) -> Path:
        return self.run_dir.parent

    @property
    def trial_id(self) -> str:
        return str(self.row.get("trial_id"))

    @property
    def last(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    @property
    def is_baseline(self) -> bool:
        return self.row.get("mode") == "none"


@dataclass
class SweepData:
    sweep_dir: Path
    name: str
    spec: Any  # kdseg.space.SweepSpec
    rows: list[dict[str, Any]]
    trials: list[Trial]
    class_names: list[str]
    palette: list[list[int]] | None

    @property
    def best(self) -> Trial | None:
        from kdseg.sweep.ranking import best_row

        row = best_row(self.rows, self.spec.max_t)
        return None if row is None else self.by_id(row["trial_id"])

    @property
    def baseline(self) -> Trial | None:
        """The best no-KD trial (ran to the end first, then by val mIoU)."""
        base = [t for t in self.trials if t.is_baseline and as_number(t.row.get("val_miou")) is not None]
        if not base:
            return None
        max_t = self.spec.max_t
        return max(
            base, key=lambda t: ((as_number(t.row.get("epochs")) or 0) >= max_t, as_number(t.row["val_miou"]))
        )

    @property
    def best_kd(self) -> Trial | None:
        """The best distilled trial in leaderboard order (None when every trial is a baseline)."""
        from kdseg.sweep.ranking import best_row

        row = best_row([r for r in self.rows if r.get("mode") != "none"], self.spec.max_t)
        return None if row is None else self.by_id(row["trial_id"])

    def by_id(self, trial_id: Any) -> Trial | None:
        return next((t for t in self.trials if t.trial_id == str(trial_id)), None)


def load_sweep(sweep_dir: str | Path) -> SweepData:
    """Read a finished sweep folder; a KdsegError says what is missing."""
    from kdseg.config import read_yaml
    from kdseg.errors import ConfigError
    from kdseg.sweep.ranking import read_leaderboard_csv
    from kdseg.sweep.space import load_resolved
    from kdseg.tracking.images import read_classes

    sweep_dir = Path(sweep_dir).resolve()
    if not sweep_dir.is_dir():
        raise KdsegError(f"{sweep_dir}: no such sweep folder")
    if not (sweep_dir / SPEC_FILE).exists():
        raise KdsegError(f"{sweep_dir}: not a kdseg sweep folder (no {SPEC_FILE})")
    board = sweep_dir / LEADERBOARD
    if not board.exists():
        raise KdsegError(
            f"{sweep_dir}: no {LEADERBOARD} yet (the sweep has not finished); `kdseg resume {sweep_dir}` finishes it"
        )
    spec = load_resolved(sweep_dir / SPEC_FILE)
    rows = read_leaderboard_csv(board)
    trials = []
    for row in rows:
        run_dir = trial_run_dir(sweep_dir, str(row.get("trial_id")))
        cfg: dict[str, Any] = {}
        if (run_dir / CONFIG_FILE).exists():
            try:
                cfg = read_yaml(run_dir / CONFIG_FILE)
            except ConfigError:
                cfg = {}
        params: dict[str, Any] = {}
        try:
            import json

            loaded = json.loads((run_dir.parent / PARAMS_FILE).read_text())
            params = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            pass
        trials.append(Trial(row, run_dir, read_metrics(run_dir), cfg, params))
    classes = next((c for t in trials if (c := read_classes(t.run_dir))), None)
    n_classes = spec.base_config.data.num_classes
    if classes:
        names, palette = list(classes["class_names"]), classes.get("palette")
    else:
        names, palette = _default_classes(spec.base_config.data.format, n_classes), None
    name = str(spec.extra.get("sweep_name") or sweep_dir.name)
    return SweepData(sweep_dir, name, spec, rows, trials, names, palette)


def _default_classes(fmt: str, n: int) -> list[str]:
    from kdseg.data import CAMVID_CLASSES, CARLA_CLASSES

    known = {"carla": CARLA_CLASSES, "synthetic": CARLA_CLASSES, "camvid": CAMVID_CLASSES}.get(fmt, ())
    return [*known[:n], *(f"class_{i}" for i in range(len(known), n))]


# ------------------------------------------------------------------------------------- searched keys


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _label_text(label: Any) -> str:
    if isinstance(label, (list, tuple)):
        return "+".join(str(x) for x in label)
    return str(label)


def trial_value(domain, key: str, config: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> Any:
    """The value a trial took for space entry ``key`` (a choice's label; None when unknown).

    From the trial's Tune parameters when known, else read back from its resolved config.
    """
    from kdseg.config import get_dotted  # lazy: keeps pydantic out of `kdseg --help`

    if params and key in params:
        try:
            decoded = domain.decode(params[key])
            return as_number(decoded) if not domain.categorical else _label_text(domain.encode(decoded))
        except ValueError:
            pass
    if not config:
        return None
    if domain.group:  # the most specific group whose settings the config holds
        matches = [
            (len(values), label)
            for values, label in zip(domain.values, domain.labels, strict=True)
            if all(_same(get_dotted(config, k), v) for k, v in values.items())
        ]
        return _label_text(max(matches, key=lambda m: m[0])[1]) if matches else None
    value = get_dotted(config, key)
    if domain.categorical:
        for v, label in zip(domain.values, domain.labels, strict=True):
            if _same(v, value):
                return _label_text(label)
        return None if value is None else _label_text(value)
    return as_number(value)


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

    from kdseg.sweep.ranking import plot_pareto

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
            if d.kind == "loguniform":
                from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            if d.low is not None and d.high is not None:
                lo, hi = float(d.low), float(d.high)
                pad = (hi / lo) ** 0.05 if d.kind == "loguniform" and lo > 0 else None
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


# ------------------------------------------------------------------------------------------ HTML


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;padding:0 18px 40px;color:#222}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
nav a{margin-right:.9em;font-size:.9em}p.note{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}th,td{padding:3px 7px;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0}td.l,th.l{text-align:left}
tr.best td{background:#e8f1ff;font-weight:600}tr.baseline td{background:#fff1f0}tr.failed td{color:#b00}tr.stopped td{color:#777}
figure{margin:.6em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}.kv td{text-align:left}.scroll{overflow-x:auto}
#leaderboard .scroll{max-height:34em;overflow-y:auto}p.tools input{font-size:.9em;padding:2px 6px;width:24em}p.tools span{font-size:.85em;color:#555;margin-left:.6em}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
"""

# Marks on <body> how many images the page has and how many decoded (data-images, data-rendered); images
# below the fold load lazily, so with #check in the URL (what the tests open) they all load at once.
LOAD_CHECK = """
<script>
if (location.hash === '#check') {
  Array.prototype.forEach.call(document.images, function (i) { i.loading = 'eager'; });
}
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-rendered', String(ok.length));
  imgs.forEach(function (i) { i.setAttribute('data-ok', i.complete && i.naturalWidth > 0 ? '1' : '0'); });
});
</script>
"""


# Sorting and filtering of the leaderboard in the page itself (no server, no library): click a header
# to sort (again: reverse), type words to keep the rows that contain all of them.
TABLE_JS = """
<script>
(function () {
  var table = document.getElementById('lb'), input = document.getElementById('lb-filter');
  var count = document.getElementById('lb-count'), body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  function filter() {
    var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
    rows.forEach(function (r) {
      var text = r.textContent.toLowerCase();
      var keep = words.every(function (w) { return text.indexOf(w) >= 0; });
      r.style.display = keep ? '' : 'none';
      shown += keep ? 1 : 0;
    });
    count.textContent = shown + ' of ' + rows.length + ' trials';
  }
  function key(r, i) {
    var c = r.cells[i], v = c.getAttribute('data-v');
    return v === null ? c.textContent.trim().toLowerCase() : parseFloat(v);
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    th.style.cursor = 'pointer';
    th.title = 'sort by this column (click again to reverse)';
    th.addEventListener('click', function () {
      var dir = th.getAttribute('data-dir') === 'asc' ? -1 : 1;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', dir === 1 ? 'asc' : 'desc');
      rows.sort(function (a, b) {
        var x = key(a, i), y = key(b, i), nx = typeof x === 'number' && !isNaN(x);
        var ny = typeof y === 'number' && !isNaN(y);
        if (nx !== ny) { return nx ? -1 : 1; }  // empty cells last either way
        return (x < y ? -1 : x > y ? 1 : 0) * dir;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  input.addEventListener('input', filter);
  filter();
})();
</script>
"""


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
    from kdseg.tracking.run import offline_runs, online_runs, read_offline_run

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
    from kdseg.tracking.run import offline_runs, online_runs, sync_command

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


# ---------------------------------------------------------------------------------------- W&B Report


def wandb_report_spec(
    *,
    entity: str,
    project: str,
    group: str,
    searched: Sequence[str],
    metric: str = "val_miou",
    title: str | None = None,
    description: str = "",
):
    """A ``wandb_workspaces`` Report comparing the runs of one sweep (W&B group); no network used.

    ``searched`` are the keys of the search space (``distill.alpha``, ``pair``): each trial logs the
    value it took under ``config.search.<key with dots as _>`` (see :func:`kdseg.tracking.search_column`).
    """
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    from kdseg.tracking.run import search_column

    def runset(name: str):
        return wr.Runset(
            entity=entity,
            project=project,
            name=name,
            filters=expr.And(expr.Metric("Group") == group),
            order=[wr.OrderBy(wr.SummaryMetric(metric), ascending=False)],
        )

    columns = [
        wr.ParallelCoordinatesPlotColumn(metric=wr.Config(f"search.{search_column(k)}"), display_name=k)
        for k in searched
    ]
    columns += [
        wr.ParallelCoordinatesPlotColumn(
            metric=wr.SummaryMetric("student_params"), display_name="student params", log=True
        ),
        wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(metric), display_name=metric),
    ]
    blocks = [
        wr.P(
            description
            or f"Sweep {group}: online knowledge distillation trials (kdseg), one W&B run per trial."
        ),
        wr.H2("Accuracy vs. size"),
        wr.PanelGrid(
            runsets=[runset(group)],
            panels=[
                wr.ScatterPlot(
                    title="val mIoU vs. student parameters",
                    x=wr.SummaryMetric("student_params"),
                    y=wr.SummaryMetric(metric),
                    log_x=True,
                    layout=wr.Layout(x=0, y=0, w=12, h=8),
                ),
                wr.ScatterPlot(
                    title="IoU per M params vs. student parameters",
                    x=wr.SummaryMetric("student_params"),
                    y=wr.SummaryMetric("iou_per_mparam"),
                    log_x=True,
                    layout=wr.Layout(x=12, y=0, w=12, h=8),
                ),
                wr.LinePlot(
                    title="student val mIoU per epoch",
                    x="epoch",
                    y=[metric],
                    layout=wr.Layout(x=0, y=8, w=12, h=8),
                ),
                wr.LinePlot(
                    title="teacher val mIoU per epoch",
                    x="epoch",
                    y=["teacher_val_miou"],
                    layout=wr.Layout(x=12, y=8, w=12, h=8),
                ),
            ],
        ),
        wr.H2("Searched hyper-parameters"),
        wr.PanelGrid(
            runsets=[runset(group)],
            panels=[
                wr.ParallelCoordinatesPlot(
                    title="searched keys -> val mIoU", columns=columns, layout=wr.Layout(x=0, y=0, w=24, h=9)
                ),
                wr.ParameterImportancePlot(with_respect_to=metric, layout=wr.Layout(x=0, y=9, w=12, h=9)),
                wr.BarPlot(title="final val mIoU", metrics=[metric], layout=wr.Layout(x=12, y=9, w=12, h=9)),
            ],
        ),
        wr.H2("Runs side by side"),
        wr.PanelGrid(
            runsets=[runset(group)],
            panels=[
                wr.RunComparer(diff_only="split", layout=wr.Layout(x=0, y=0, w=24, h=12)),
                wr.MediaBrowser(
                    title="predictions",
                    media_keys=["images/predictions"],
                    layout=wr.Layout(x=0, y=12, w=12, h=10),
                ),
                wr.MediaBrowser(
                    title="layer by layer",
                    media_keys=["images/layers"],
                    layout=wr.Layout(x=12, y=12, w=12, h=10),
                ),
            ],
        ),
    ]
    return wr.Report(
        entity=entity,
        project=project,
        title=(title or f"kdseg sweep {group}")[:128],
        description=f"Knowledge-distillation sweep {group}: accuracy vs. size, searched keys, runs.",
        blocks=blocks,
        width="fluid",
    )


def _with_timeout(fn, timeout: float):
    """``fn()`` in a daemon thread; TimeoutError when it does not answer in time (never hangs)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the caller
            box["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise TimeoutError(f"no answer from W&B within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def publish_wandb_report(sd: SweepData, timeout: float = 60.0) -> str:
    """Save the sweep's W&B Report; returns its URL. Raises on any failure (the caller reports it)."""
    import wandb

    w = sd.spec.base_config.tracking.wandb
    entity = w.entity or _with_timeout(lambda: wandb.Api(timeout=15).default_entity, timeout)
    if not entity:
        raise RuntimeError("no W&B entity (set tracking.wandb.entity)")
    report = wandb_report_spec(entity=entity, project=w.project, group=sd.name, searched=list(sd.spec.space))
    _with_timeout(report.save, timeout)
    return report.url


def wants_wandb_report(sd: SweepData, choice: str = "auto") -> tuple[bool, str]:
    """Whether to publish a W&B Report, and why (or why not)."""
    from kdseg.tracking.run import online_runs, resolve_mode, server_reachable

    if choice == "never":
        return False, "--wandb never"
    mode, why = resolve_mode(sd.spec.base_config.tracking.wandb.mode)
    if choice == "auto":
        if mode != "online":
            return False, f"W&B is {mode} ({why})"
        if not online_runs(sd.sweep_dir):
            return False, "the sweep logged no online runs (upload the offline ones with wandb sync first)"
    elif mode == "disabled":
        return False, f"W&B is disabled ({why})"
    if not server_reachable():
        return False, "the W&B server is unreachable"
    return True, ""


__all__ = [
    "SweepData",
    "Trial",
    "load_sweep",
    "publish_wandb_report",
    "render_html",
    "wandb_report_spec",
    "write_report",
]
