"""W&B tracking: one W&B run per training run or sweep trial, and never in the way of training.

:class:`WandbRun` opens a run (``wandb.init``) for one :func:`kdseg.train.train_kd` call, logs every
epoch's metrics (step = epoch), the per-class IoU, the prediction and layer-wise images of
:class:`kdseg.visualize.EpochImages` and a summary (``val_miou``, ``student_params``,
``iou_per_mparam``, ``teacher_val_miou``, ``status``), and finishes the run however training ends.
W&B's own system metrics (CPU, memory, GPU) stay on.

The mode comes from ``tracking.wandb.mode`` (see :func:`resolve_mode`):

- ``disabled`` (or ``WANDB_MODE=disabled`` / ``WANDB_DISABLED=true``): nothing is written.
- an explicit ``WANDB_MODE`` (``offline``/``dryrun``, ``online``/``run``) is respected.
- ``auto``: ``online`` when a W&B API key is configured (``WANDB_API_KEY``, a ``~/.netrc`` entry for
  the W&B host, or ``wandb login``), otherwise ``offline``.
- ``online`` without an API key, or with the server unreachable (a 3 s TCP probe, remembered for
  the whole sweep), or when ``wandb.init`` fails: ``offline``, with the reason logged.

Offline runs are stored in the run folder (``RUN/wandb/offline-run-*``; for a sweep trial that is
``SWEEP/tune/<trial_id>/run/``, inside the sweep folder) and uploaded later with the command
:func:`sync_command` prints. Every W&B call is guarded: a W&B failure logs one warning and turns
tracking off for that run; training goes on. Timeouts are short (``init_timeout``, and for online
runs ``finish_timeout`` and per-request timeouts), so W&B never stalls a sweep.

The API key is only ever looked up (to choose the mode), never printed, logged or written.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kdseg.tracking.hardware import epoch_hooks, hardware_info
from kdseg.tracking.mode import _online_or_offline, _remember_unreachable, resolve_mode
from kdseg.tracking.wandb_records import offline_runs, online_runs, sync_command

log = logging.getLogger(__name__)

INIT_TIMEOUT_S = 30.0
ONLINE_FINISH_TIMEOUT_S = 30.0
SUMMARY_KEYS = ("val_miou", "student_params", "iou_per_mparam", "teacher_val_miou", "teacher_params", "epoch")


# ------------------------------------------------------------------------------------------ runs


def search_column(key: str) -> str:
    """Name of a searched key in the W&B config's ``search`` section (``distill.alpha`` -> ``distill_alpha``)."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", key)


def run_id_for(group: str, name: str) -> str:
    """A W&B run id (unique in a project) for trial ``name`` of sweep ``group``."""
    rid = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{group}-{name}").strip("-")
    return rid[-64:]


def _number(v: Any) -> float | int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)) and (not isinstance(v, float) or math.isfinite(v)):
        return v
    return None


def _finish_status(exc_type) -> str:
    from kdseg.train import Diverged

    if exc_type is None:
        return "completed"
    if issubclass(exc_type, Diverged):
        return "diverged"
    if issubclass(exc_type, SystemExit):  # Ray Tune stops a trial (ASHA) by exiting its thread
        return "stopped"
    if issubclass(exc_type, KeyboardInterrupt):
        return "interrupted"
    return "error"


class WandbRun:
    """The W&B run of one ``train_kd`` call (a ``kdseg train`` run or one sweep trial).

    Use as a context manager around ``train_kd``: pass :attr:`hooks` as its ``hooks`` and
    :meth:`wrap` the report function. On exit the run is finished with the status the exit implies
    (``completed``; ``stopped`` for Ray Tune's stop; ``diverged``; ``error``), unless :meth:`finish`
    was called already. Every method is safe to call when tracking is disabled or W&B failed.
    """

    def __init__(
        self,
        cfg,
        run_dir: str | Path,
        *,
        group: str | None = None,
        name: str | None = None,
        run_id: str | None = None,
        job_type: str = "train",
        extra_config: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        tags: Sequence[str] = (),
        state_dir: str | Path | None = None,
        mode: str | None = None,
        device: Any = None,
        wandb_dir: str | Path | None = None,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.wandb_dir = Path(wandb_dir) if wandb_dir is not None else self.run_dir
        self.group, self.name, self.run_id, self.job_type = group, name, run_id, job_type
        self.extra_config = dict(extra_config or {})
        self.class_names = list(class_names or [])
        self.tags = list(tags)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.device = device
        self.mode, self.reason = (mode, "requested") if mode else resolve_mode(cfg.tracking.wandb.mode)
        self.run = None
        self.init_seconds: float | None = None
        self.last_epoch = 0
        self.status: str | None = None
        self._pending_images: dict[int, dict[str, Path]] = {}
        self._finished = False
        self.hooks = epoch_hooks(cfg, sink=self.stage_images)

    # -------------------------------------------------------------------------------- lifecycle

    @property
    def active(self) -> bool:
        return self.run is not None

    def open(self) -> WandbRun:
        """Start the W&B run (a no-op when disabled); falls back to offline, then to no tracking."""
        if self.mode == "disabled" or self.run is not None:
            return self
        if self.mode == "online":
            mode, why = _online_or_offline(self.state_dir)
            if mode != "online":
                self.mode, self.reason = mode, why
                log.warning("kdseg: W&B offline: %s", why)
        started = time.perf_counter()
        try:
            self.run = self._init(self.mode)
        except Exception as e:
            if self.mode == "online":
                log.warning("kdseg: W&B online init failed (%s); logging offline", _short(e))
                self.mode, self.reason = "offline", f"online init failed: {_short(e)}"
                _remember_unreachable(self.state_dir, self.reason)
                try:
                    self.run = self._init("offline")
                except Exception as e2:
                    self._give_up(e2)
            else:
                self._give_up(e)
        self.init_seconds = time.perf_counter() - started
        return self

    def _init(self, mode: str):
        import wandb

        from kdseg.config import config_to_dict

        self.wandb_dir.mkdir(parents=True, exist_ok=True)
        w = self.cfg.tracking.wandb
        settings: dict[str, Any] = dict(
            init_timeout=INIT_TIMEOUT_S,
            silent=True,
            console="off",  # training output stays where it is; no fd redirection in Ray workers
            x_stats_sampling_interval=5.0,  # system metrics on, sampled often enough for short trials
            # wandb-core buffers the .wandb file (15 s by default): a trial process that Ray ends
            # abruptly would lose everything logged since; flush every 2 s instead
            x_transaction_log_flush_interval=2.0,
        )
        if mode == "online":
            settings.update(
                finish_timeout=ONLINE_FINISH_TIMEOUT_S,
                x_graphql_timeout_seconds=10.0,
                x_graphql_retry_max=3,
                x_file_stream_timeout_seconds=10.0,
                x_file_stream_retry_max=3,
                x_file_transfer_timeout_seconds=30.0,
                x_file_transfer_retry_max=3,
            )
        config = config_to_dict(self.cfg)
        config.update(self.extra_config)
        config["hardware"] = hardware_info(self.device)
        kwargs: dict[str, Any] = dict(
            dir=str(self.wandb_dir),
            project=w.project,
            entity=w.entity,
            mode=mode,
            group=self.group,
            name=self.name,
            job_type=self.job_type,
            config=config,
            tags=self.tags or None,
            reinit="finish_previous",
            settings=wandb.Settings(**settings),
        )
        if self.run_id:
            kwargs.update(id=self.run_id, resume="allow")
        return wandb.init(**kwargs)

    def _give_up(self, e: BaseException) -> None:
        log.warning("kdseg: W&B tracking off for %s: %s", self.run_dir, _short(e))
        self.mode, self.reason, self.run = "disabled", f"W&B failed: {_short(e)}", None

    def __enter__(self) -> WandbRun:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        status = _finish_status(exc_type)
        if status == "stopped" and self.last_epoch >= self.cfg.train.epochs:
            status = "completed"  # Tune also stops a trial that reached max_t
        self.finish(self.status or status, error=None if exc is None else _short(exc))

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        """Write the final summary and finish the run (idempotent)."""
        if self._finished:
            return
        self._finished = True
        self.status = status
        if self.run is None:
            return
        try:
            self.run.summary["status"] = status
            if error:
                self.run.summary["error"] = error[:500]
            self.run.finish(exit_code=0 if status in ("completed", "stopped") else 1)
        except Exception as e:
            log.warning("kdseg: W&B finish failed: %s", _short(e))
        finally:
            self.run = None

    # ---------------------------------------------------------------------------------- logging

    def stage_images(self, epoch: int, paths: Mapping[str, Path]) -> None:
        """Image sink of :class:`kdseg.visualize.EpochImages`: logged with that epoch's metrics."""
        self._pending_images[epoch] = dict(paths)

    def log_epoch(self, metrics: Mapping[str, Any]) -> None:
        """Log one epoch's metrics (step = epoch), its per-class IoU and its images; update the summary."""
        epoch = int(metrics.get("epoch") or self.last_epoch + 1)
        self.last_epoch = max(self.last_epoch, epoch)
        images = self._pending_images.pop(epoch, {})
        if self.run is None:
            return
        try:
            import wandb

            row: dict[str, Any] = {}
            for k, v in metrics.items():
                n = _number(v)
                if n is not None:
                    row[k] = n
                elif isinstance(v, (list, tuple)) and k.endswith("per_class_iou"):
                    who = k.removesuffix("_per_class_iou")
                    for i, x in enumerate(v):
                        if _number(x) is not None:
                            name = self.class_names[i] if i < len(self.class_names) else f"class_{i}"
                            row[f"{who}_iou/{name}"] = x
            for kind, path in images.items():
                row[f"images/{kind}"] = wandb.Image(str(path), caption=f"epoch {epoch}")
            self.run.log(row, step=epoch)
            summary = {k: row[k] for k in SUMMARY_KEYS if k in row}
            best = self.run.summary.get("best_val_miou")
            if "val_miou" in row and (best is None or row["val_miou"] > best):
                summary["best_val_miou"] = row["val_miou"]
            self.run.summary.update(summary)
        except Exception as e:
            log.warning("kdseg: W&B logging failed, tracking off for this run: %s", _short(e))
            try:
                self.run.finish(exit_code=1)
            except Exception:
                pass
            self.run, self.mode = None, "disabled"

    def wrap(self, report=None):
        """A ``train_kd`` report function that logs to W&B, then calls ``report`` (if any)."""

        def tracked_report(metrics: dict[str, Any], ckpt_dir) -> None:
            self.log_epoch(metrics)
            if report is not None:
                report(metrics, ckpt_dir)

        return tracked_report

    # ------------------------------------------------------------------------------------ where

    @property
    def offline_dirs(self) -> list[Path]:
        return offline_runs(self.wandb_dir)

    def describe(self) -> str:
        """One line for the user: where the run went and how to upload it."""
        if self.mode == "disabled":
            return f"W&B: disabled ({self.reason})"
        if self.mode == "offline":
            cmd = sync_command(self.wandb_dir)
            return (
                f"W&B: offline ({self.reason}); upload with: {cmd}"
                if cmd
                else f"W&B: offline ({self.reason})"
            )
        return f"W&B: online, project {self.cfg.tracking.wandb.project}"


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


# ------------------------------------------------------------------------------------ sweep side


def finish_sweep(plan, result) -> list[str]:
    """Lines to print after a sweep: where its W&B runs are, how to upload them, how to report.

    ``plan`` may be None (``kdseg resume`` has no plan); only ``result.sweep_dir`` is needed.
    """
    sweep_dir = Path(getattr(result, "sweep_dir", result)).resolve()
    lines: list[str] = []
    offline = offline_runs(sweep_dir)
    online = online_runs(sweep_dir)
    if offline:
        ids = {p.name.rsplit("-", 1)[-1] for p in offline}
        lines.append(f"W&B: {len(ids)} offline run(s) in the trial folders; upload them with:")
        lines.append(f"  {sync_command(sweep_dir)}")
    if online:
        project = None
        try:
            from kdseg.sweep.space import load_resolved

            spec = plan.spec if plan is not None else load_resolved(sweep_dir)
            w = spec.base_config.tracking.wandb
            project = f"{w.entity}/{w.project}" if w.entity else w.project
        except Exception:
            pass
        where = f" in project {project}" if project else ""
        lines.append(f"W&B: {len(online)} online run(s){where}, group {sweep_dir.name}")
    lines.append(f"report: kdseg report {shlex.quote(str(sweep_dir))}")
    return lines


__all__ = ["WandbRun", "finish_sweep", "run_id_for", "search_column"]
