"""Fault injection: make sweep trials fail on purpose, to test kdseg's fault handling.

A testing aid, never needed to run a sweep. A search-space file may carry a top-level ``faults:``
list; every rule makes the trials it matches fail at a chosen point of training::

    faults:
      - {action: raise, epoch: 2, step: 1, times: 1}            # once per trial, mid-epoch 2: retried
      - {action: raise, epoch: 1, when: {distill.mode: none}}   # every attempt of the baseline: error
      - {action: corrupt_checkpoint, epoch: 2, times: 1}        # truncate its saved checkpoints, then raise

``epoch`` is 1-based (as in ``metrics.jsonl``), ``step`` the 1-based training step within it.
``times`` caps how often the rule fires per trial over all its attempts (``null``: every attempt);
``when`` holds dotted config keys the trial's config must equal. ``raise`` raises
:class:`InjectedFault` (a ``RuntimeError``, so Ray Tune retries the trial up to ``sweep.max_failures``
from its last checkpoint); ``corrupt_checkpoint`` first truncates every full checkpoint of the trial
(the ``run/checkpoint-eNNNN.pt`` files Tune's pointers name), so the retry finds a damaged checkpoint.
Counts live in files under ``SWEEP_DIR/.faults/``, so a retried attempt (a new process, maybe another
node) sees them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdseg.layout import EPOCH_CHECKPOINT_GLOB, FAULTS_DIR, FULL_CHECKPOINT, TUNE_DIR
from kdseg.overrides import get_dotted
from kdseg.sweep.space import FaultRule


class InjectedFault(RuntimeError):
    """The failure a fault rule asked for."""


class FaultInjector:
    """The rules that apply to one trial; :meth:`on_step` fires them."""

    def __init__(self, rules: Sequence[FaultRule], cfg_dict: dict[str, Any], trial_id: str, sweep_dir: Path):
        self.rules = [
            (i, r)
            for i, r in enumerate(rules)
            if all(get_dotted(cfg_dict, k) == v for k, v in r.when.items())
        ]
        self.trial_id = trial_id
        self.sweep_dir = Path(sweep_dir)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def _claim(self, index: int, rule: FaultRule) -> bool:
        """Whether the rule fires now: one marker file per firing, created exclusively."""
        if rule.times is None:
            return True
        folder = self.sweep_dir / FAULTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(rule.times):
            try:
                fd = os.open(folder / f"{self.trial_id}.{index}.{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                continue
            os.close(fd)
            return True
        return False

    def on_step(self, epoch: int, step: int) -> None:
        for index, rule in self.rules:
            if (rule.epoch, rule.step) == (epoch, step) and self._claim(index, rule):
                if rule.action == "corrupt_checkpoint":
                    self._corrupt_checkpoints()
                raise InjectedFault(
                    f"injected fault ({rule.action}) in trial {self.trial_id} at epoch {epoch}, step {step}"
                )

    def _corrupt_checkpoints(self) -> None:

        trial = self.sweep_dir / TUNE_DIR / self.trial_id  # what Tune holds, and what its pointers name
        for path in [
            *trial.glob(f"checkpoint_*/{FULL_CHECKPOINT}"),
            *trial.glob(f"run/{EPOCH_CHECKPOINT_GLOB}"),
        ]:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
