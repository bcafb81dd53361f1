"""A compact live trial table for sweeps (a Ray Tune callback drawing with rich).

On a terminal it redraws one table (trial, status, pair, epoch, val mIoU, params) at most twice a
second; elsewhere (CI logs, files) it prints one line per finished trial instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table

_STYLE = {"RUNNING": "cyan", "TERMINATED": "green", "ERROR": "red", "PENDING": "dim", "PAUSED": "yellow"}


class LiveTrialTable(Callback):
    def __init__(self, max_t: int, num_samples: int, describe=None, console: Console | None = None):
        self.max_t = max_t
        self.num_samples = num_samples
        self.describe = describe  # params dict -> short "teacher>student" label
        self._console = console
        self._live: Live | None = None
        self._last_draw = 0.0
        self._started = time.perf_counter()
        self._done = 0

    # Tune pickles its callbacks with the experiment state: consoles and live displays stay behind.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_console": None, "_live": None}

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console(stderr=True)
        return self._console

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal and sys.stderr.isatty()

    # ---------------------------------------------------------------------------- drawing
    def _table(self, trials) -> Table:
        elapsed = time.perf_counter() - self._started
        table = Table(
            title=f"kdseg sweep: {self._done}/{self.num_samples} trials done, {elapsed:.0f}s",
            title_justify="left",
            box=None,
            pad_edge=False,
        )
        for col in ("trial", "status", "pair", "epoch", "val mIoU", "teacher", "params"):
            table.add_column(col, justify="right" if col not in ("trial", "status", "pair") else "left")
        for t in trials:
            r: dict[str, Any] = t.last_result or {}
            status = "DIVERGED" if r.get("diverged") else t.status
            if t.status == "TERMINATED" and not r.get("diverged") and (r.get("epoch") or 0) < self.max_t:
                status = "STOPPED"
            miou = r.get("val_miou")
            tmiou = r.get("teacher_val_miou")
            params = r.get("student_params")
            table.add_row(
                t.trial_id,
                f"[{_STYLE.get(t.status, '')}]{status}[/]",
                self.describe(t.config) if self.describe else "",
                f"{r.get('epoch', 0)}/{self.max_t}",
                f"{miou:.3f}" if isinstance(miou, float) else "-",
                f"{tmiou:.3f}" if isinstance(tmiou, float) else "-",
                f"{params / 1e6:.2f}M" if params else "-",
            )
        return table

    def _draw(self, trials, force: bool = False) -> None:
        if not self.interactive:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.5:
            return
        self._last_draw = now
        if self._live is None:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(self._table(trials), refresh=True)

    # ---------------------------------------------------------------------------- Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self._draw(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._draw(trials)

    def _finished(self, trials, trial, what: str) -> None:
        self._done += 1
        if self.interactive:
            self._draw(trials, force=True)
            return
        r = trial.last_result or {}
        miou = r.get("val_miou")
        label = self.describe(trial.config) if self.describe else ""
        self.console.print(
            f"[{self._done}/{self.num_samples}] {trial.trial_id} {what:<9} {label:<28} "
            f"epoch {r.get('epoch', 0)}/{self.max_t}  val mIoU {miou:.3f}"
            if isinstance(miou, float)
            else f"[{self._done}/{self.num_samples}] {trial.trial_id} {what:<9} {label}",
            highlight=False,
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
        if self._live is not None:
            self._live.update(self._table(trials), refresh=True)
            self._live.stop()
            self._live = None
