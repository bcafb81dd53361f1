"""A compact live trial table for sweeps (a Ray Tune callback drawing with rich).

On a terminal, a :class:`rich.live.Live` display redraws one table (trial, status, pair, T, alpha,
epoch, val mIoU, teacher mIoU, params) every second by itself, so the elapsed time moves during an
epoch; Tune's events only replace the rows. Elsewhere (CI logs, files) it prints one line per
finished trial instead. The table fits 80 columns: only the pair column wraps.

"done" counts the rows shown as finished (completed, stopped, diverged, error: the leaderboard's
words), so the title always agrees with the rows, also after a resume and while Tune retries a trial.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table

_STYLE = {
    "running": "cyan",
    "completed": "green",
    "stopped": "dim",
    "error": "red",
    "diverged": "red",
    "pending": "dim",
    "paused": "yellow",
}
FINAL = ("completed", "stopped", "error", "diverged")
# (header, justify); the pair column is the only one allowed to wrap
COLUMNS = (
    ("trial", "left"),
    ("status", "left"),
    ("pair", "left"),
    ("T", "right"),
    ("alpha", "right"),
    ("epoch", "right"),
    ("mIoU", "right"),
    ("teacher", "right"),
    ("params", "right"),
)


def _num(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, int | float) and not isinstance(v, bool) else "-"


class LiveTrialTable(Callback):
    """``describe(params)`` gives a trial's label: a string, or a dict with ``pair``, ``temperature`` and
    ``alpha`` (None where a key does not apply, e.g. a no-KD trial)."""

    def __init__(self, max_t: int, num_samples: int, describe=None, console: Console | None = None):
        self.max_t = max_t
        self.num_samples = num_samples
        self.describe = describe
        self._console = console
        self._live: Live | None = None
        self._clock = time.perf_counter
        self._started = self._clock()
        self._rows: list[tuple[str, ...]] = []
        self._final: dict[str, str] = {}  # trial_id -> final status word, set by the completion hooks

    # Tune pickles its callbacks with the experiment state: consoles and live displays stay behind.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_console": None, "_live": None, "_clock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._clock = time.perf_counter

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console(stderr=True)
        return self._console

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal and sys.stderr.isatty()

    # ---------------------------------------------------------------------------- rows
    def _details(self, trial) -> dict[str, Any]:
        d = self.describe(trial.config) if self.describe else ""
        if not isinstance(d, dict):
            return {"pair": d}
        if "pair" not in d and d.get("student"):  # spaces let it wrap between teacher and student
            d = {
                **d,
                "pair": f"{d['teacher']} > {d['student']}"
                if d.get("mode") != "none"
                else f"{d['student']} (no KD)",
            }
        return d

    def _status(self, trial) -> str:
        if trial.trial_id in self._final:
            return self._final[trial.trial_id]
        r = trial.last_result or {}
        if r.get("diverged"):
            return "diverged"
        if trial.status == "TERMINATED":
            return "completed" if (r.get("epoch") or 0) >= self.max_t else "stopped"
        return str(trial.status).lower()

    def update(self, trials) -> None:
        """Rebuild the rows from Tune's trials (called on Tune's thread, never by the refresh thread)."""
        rows = []
        for t in trials:
            r: dict[str, Any] = t.last_result or {}
            d = self._details(t)
            params = r.get("student_params")
            rows.append(
                (
                    str(t.trial_id),
                    self._status(t),
                    str(d.get("pair") or ""),
                    _num(d.get("temperature"), ".2f"),
                    _num(d.get("alpha"), ".2f"),
                    f"{r.get('epoch', 0)}/{self.max_t}",
                    _num(r.get("val_miou"), ".3f"),
                    _num(r.get("teacher_val_miou"), ".3f"),
                    f"{params / 1e6:.2f}M" if params else "-",
                )
            )
        self._rows = rows

    @property
    def done(self) -> int:
        return sum(row[1] in FINAL for row in self._rows)

    def table(self) -> Table:
        """The table as drawn now: the rows of the last update, the elapsed time of this moment."""
        rows = self._rows
        elapsed = self._clock() - self._started
        m, s = divmod(int(elapsed), 60)
        table = Table(
            title=f"kdseg sweep: {self.done}/{self.num_samples} trials done, {m}:{s:02d} elapsed",
            title_justify="left",
            box=None,
            pad_edge=False,
            padding=(0, 1, 0, 0),  # one space between columns
            header_style="bold",
        )
        for name, justify in COLUMNS:
            wraps = name == "pair"
            width = max([len(name)] + [len(row[len(table.columns)]) for row in rows])
            table.add_column(
                name,
                justify=justify,
                no_wrap=not wraps,
                overflow="fold",
                min_width=min(width, 10 if wraps else width),
            )
        for row in rows:
            table.add_row(row[0], f"[{_STYLE.get(row[1], '')}]{row[1]}[/]", *row[2:])
        return table

    # ---------------------------------------------------------------------------- drawing
    def _draw(self, trials) -> None:
        self.update(trials)
        if not self.interactive:
            return
        if self._live is None:  # refreshes itself every second: the elapsed time moves during epochs
            self._live = Live(
                console=self.console,
                get_renderable=self.table,
                auto_refresh=True,
                refresh_per_second=1,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        self._live.refresh()

    # ---------------------------------------------------------------------------- Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self._final.pop(trial.trial_id, None)
        self._draw(trials)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._final.pop(trial.trial_id, None)
        self._draw(trials)

    def on_trial_recover(self, iteration, trials, trial, **info):  # errored, Tune retries it
        self._final.pop(trial.trial_id, None)
        self._draw(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._draw(trials)

    def _finished(self, trials, trial, what: str) -> None:
        self._final[trial.trial_id] = what
        self._draw(trials)
        if self.interactive:
            return
        r = trial.last_result or {}
        miou = r.get("val_miou")
        d = self._details(trial)
        label = str(d.get("pair") or "")
        kd = f" T {d['temperature']:.2f} alpha {d['alpha']:.2f}" if d.get("temperature") is not None else ""
        head = f"[{self.done}/{self.num_samples}] {trial.trial_id} {what:<9} {label}{kd}"
        self.console.print(
            f"{head}  epoch {r.get('epoch', 0)}/{self.max_t}  val mIoU {miou:.3f}"
            if isinstance(miou, float)
            else head,
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        what = (
            "diverged"
            if r.get("diverged")
            else ("completed" if (r.get("epoch") or 0) >= self.max_t else "stopped")
        )
        self._finished(trials, trial, what)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finished(trials, trial, "error")

    def on_experiment_end(self, trials, **info):
        self.update(trials)
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
