"""The Ray Tune function trainable: one sweep trial = one call of :func:`kdseg.train.train_kd`.

The decoded dataset arrives through ``tune.with_parameters`` (the object store: one copy per node,
shared read-only by that node's trials). Each epoch's metrics go to ``tune.report``; at a checkpoint
epoch the full checkpoint is written once into the trial's run folder (``run/checkpoint-eNNNN.pt``, on the
sweep's storage) and Tune gets a ``tune.Checkpoint`` of a folder holding only a pointer to it
(``checkpoint.json``, :class:`kdseg.checkpoint.Pointer`) and ``metrics.jsonl``, so Ray copies no
weights. The file of the last two reported checkpoints is kept (the newest is registered with Tune
when ``tune.report`` returns), older ones are removed. A restarted trial resumes from
``tune.get_checkpoint()``, following its pointer.

Each trial is one W&B run (:class:`kdseg.tracking.WandbRun`: group = sweep name, name = trial id,
config = the trial's resolved config plus its searched values under ``search``), finished however
the trial ends (completed, stopped by ASHA, diverged, failed). The trial's epoch hooks write the
prediction and layer-wise PNGs into ``run/images/`` and add ``peak_rss_mb`` to its metrics.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from kdseg.checkpoint import (
    Pointer,
    prune_epoch_checkpoints,
    read_pointer,
    save_epoch_checkpoint,
    write_pointer,
)
from kdseg.errors import CheckpointError
from kdseg.layout import (
    CHECKPOINT_POINTER,
    FULL_CHECKPOINT,
    METRICS_FILE,
    REPORT_STAGING_DIR,
    copy_metrics,
    drop_metrics,
    trial_run_dir,
)

log = logging.getLogger(__name__)

# Lists (per-class IoU) stay in metrics.jsonl; Tune gets scalars.
_SCALARS = (int, float, bool, str)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, _SCALARS) or v is None}


def trial_wandb_run(cfg, params: dict[str, Any], sweep_dir: Path, trial_id: str, data, run_dir: Path):
    """The (not yet opened) W&B run of one trial."""
    from kdseg.sweep.selection import CONTROL_KEY
    from kdseg.tracking.run import WandbRun, run_id_for, search_column

    group = sweep_dir.name
    control = params.get(CONTROL_KEY)
    # a no-KD control is not a search point: none of the searched values applies to it
    search = (
        {}
        if control is not None
        else {search_column(k): v for k, v in params.items() if isinstance(v, (int, float, str, bool))}
    )
    return WandbRun(
        cfg,
        run_dir,
        group=group,
        name=trial_id,
        run_id=run_id_for(group, trial_id),
        job_type="sweep-trial",
        extra_config={
            "sweep_name": group,
            "trial_id": trial_id,
            "search": search,
            **({"control": control} if control is not None else {}),
        },
        class_names=getattr(data, "class_names", None),
        state_dir=sweep_dir,
        # beside run/, not in it: run/ is what Tune copies into every checkpoint
        wandb_dir=run_dir.parent,
    )


class TrialExit:
    """Lets Ray Tune's stop of a trial wait (at most ``timeout`` s) for the trial to wind down.

    Tune stops a function trainable (ASHA, max_t reached) by releasing its training thread, which
    then exits inside ``tune.report``, and ends the worker at once: a W&B run being finished in that
    thread, and the wandb-core process with its unwritten records, would be killed midway. While the
    thread waits inside ``tune.report`` (``in_report``), the session's ``finish`` is made to wait for
    ``done`` (set when the trainable returns); a thread still busy training is not waited for.
    Best effort: if Ray's internals differ, nothing is wrapped.
    """

    def __init__(self, timeout: float = 20.0):
        self.done = threading.Event()
        self.in_report = threading.Event()
        self.timeout = timeout
        try:
            from kdseg.sweep.ray_private import train_session

            session = train_session()
            # a reused actor keeps its session: wrap Ray's own finish, never a previous trial's wrapper
            original = getattr(session, "_kdseg_ray_finish", None) or session.finish
        except Exception:
            return

        def finish(*args, **kwargs):
            stopping_in_report = self.in_report.is_set()  # before the thread is released
            try:
                return original(*args, **kwargs)
            finally:
                if stopping_in_report:
                    self.done.wait(self.timeout)

        try:
            session._kdseg_ray_finish = original
            session.finish = finish
        except Exception:
            pass

    def report(self, *args, **kwargs) -> None:
        """``tune.report``, marked as the point where a stop makes this thread exit."""
        self.in_report.set()
        try:
            tune.report(*args, **kwargs)
        finally:
            self.in_report.clear()


def kd_trainable(params: dict[str, Any], spec=None, data=None, sweep_dir: str | None = None) -> None:
    exit_ = TrialExit()
    try:
        run_trial(params, spec, data, sweep_dir, exit_.report)
    finally:
        exit_.done.set()
        from kdseg.tracking.hardware import release_memory

        release_memory()  # a reused worker's next trial starts from what this one freed


_FROM_TUNE = object()


def run_trial(
    params: dict[str, Any],
    spec,
    data,
    sweep_dir: str | None,
    report_to_tune=tune.report,
    *,
    trial_id: str | None = None,
    checkpoint: Any = _FROM_TUNE,
    checkpoint_type: type = tune.Checkpoint,
    report_every_process: bool = False,
) -> None:
    """One trial on this process: W&B run, scores, faults, resume and recovery around ``train_kd``.

    Defaults: a Tune function trainable. A Ray Train worker (:mod:`kdseg.sweep.workers`) passes its
    trial id, ``ray.train.get_checkpoint()``, ``ray.train.report`` and its Checkpoint class, and
    ``report_every_process`` (``train_kd`` then reports on its other processes too; only this, the
    main one, comes here).
    """
    from kdseg.config import config_to_dict
    from kdseg.sweep.faults import FaultInjector
    from kdseg.sweep.selection import DIVERGED_SCORE, score_metrics
    from kdseg.sweep.space import describe_trial, trial_config, trial_label
    from kdseg.sweep.teacher_stage import fill_teacher
    from kdseg.train import Diverged, train_kd

    cfg = fill_teacher(trial_config(spec, params), sweep_dir)  # teacher.checkpoint: train -> its student.pt
    trial_id = trial_id or tune.get_context().get_trial_id()
    # The run folder lives in the sweep folder (shared storage on a cluster), not Ray's local staging dir.
    run_dir = trial_run_dir(Path(sweep_dir), trial_id)
    resume = restored = damaged = None
    done = {"epoch": 0}  # the last epoch this trial has finished (restored or reported)
    recovered: dict[str, str] = {}  # a damaged checkpoint this attempt started again without
    if checkpoint is _FROM_TUNE:
        checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        restored = Path(tempfile.mkdtemp(prefix="kdseg-restore-"))
        checkpoint.to_directory(str(restored))  # a pointer and metrics.jsonl: a few kB
        try:
            resume = restored_checkpoint(restored, run_dir)
        except CheckpointError as e:
            damaged = e  # an unreadable pointer: handled below as a damaged checkpoint
        if resume is not None:
            # metrics.jsonl of the restored attempt continues from the checkpoint's epochs
            done["epoch"] = copy_metrics(restored, run_dir)
        elif (
            damaged is None
        ):  # pruned when the trial finished before a driver crash: run it again from scratch
            log.warning(
                "trial %s: its checkpoint holds no %s; restarting from scratch", trial_id, CHECKPOINT_POINTER
            )
            drop_metrics(run_dir)
    # the files of the checkpoints Tune may hold: the one resumed from, then the last two reported
    pointed: list[str] = [resume.path.name] if isinstance(resume, Pointer) else []

    last: dict[str, Any] = {}
    wb = trial_wandb_run(cfg, params, Path(sweep_dir), trial_id, data, run_dir)
    sweep = spec.sweep
    # what every result carries besides the epoch's metrics: the trial's identity and its student's cost
    static = {
        "label": trial_label(spec, params),
        **describe_trial(cfg),
        **_student_cost(cfg, Path(sweep_dir)),
        "node_id": _node_id(),
    }

    def report(metrics: dict[str, Any], pointer: Pointer | None) -> None:
        nonlocal last
        done["epoch"] = int(metrics.get("epoch") or done["epoch"] + 1)
        metrics = {**metrics, **recovered, **static}
        if metrics.get("gflops") and metrics.get("val_miou") is not None:
            metrics["iou_per_gflop"] = metrics["val_miou"] / metrics["gflops"]
        # the one score ASHA and the study follow (a control's floor is set when the sweep finalises)
        metrics.update(score_metrics(sweep.objective, metrics, sweep.quality_floor))
        wb.log_epoch(metrics)  # before tune.report: a stopped trial exits inside tune.report
        if (metrics.get("epoch") or 0) >= cfg.train.epochs:
            wb.finish("completed")  # the last epoch: close the W&B run before Tune ends the trial
        last = scalar_metrics(metrics)
        if pointer is None:
            report_to_tune(last)
            return
        # what Tune copies: the pointer, and the metrics a restored attempt continues from. In the run
        # folder, not /tmp: a trial that Tune stops exits inside the report, so `finally` may never run
        # (the folder then goes when the trial has finished: callbacks.PruneFinishedCheckpoints)
        folder = run_dir / REPORT_STAGING_DIR
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        try:
            write_pointer(folder, pointer)
            shutil.copyfile(run_dir / METRICS_FILE, folder / METRICS_FILE)
            report_to_tune(last, checkpoint=checkpoint_type.from_directory(str(folder)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        # Tune has registered this pointer; the one before stays until the next is (a crash between a
        # write and its report resumes from the previous pair), older files and orphans go
        pointed[:] = [*pointed[-1:], pointer.path.name]
        prune_epoch_checkpoints(run_dir, keep=pointed)

    faults = FaultInjector(
        getattr(spec, "faults", None) or [], config_to_dict(cfg), trial_id, Path(sweep_dir)
    )

    def on_step(step: int, _total: int) -> None:
        faults.on_step(done["epoch"] + 1, step)

    def run(resume_from):
        train_kd(
            cfg,
            data,
            report,
            run_dir=run_dir,
            resume=resume_from,
            hooks=wb.hooks,
            keep_last_checkpoint=False,
            on_step=on_step if faults else None,
            report_every_process=report_every_process,
            save_checkpoint=lambda state, epoch: save_epoch_checkpoint(state, run_dir, epoch),
            student_at=asha_stop_epochs(spec.sweep, cfg.train.epochs),
        )

    with wb:
        try:
            try:
                if damaged is not None:
                    raise damaged
                run(resume)
            except CheckpointError as e:
                if resume is None and damaged is None:
                    raise
                # a truncated or corrupted checkpoint: say so, and start the trial again from scratch
                # name the checkpoint as stored (Tune's copy), not the temporary folder it was read from
                msg = str(e).replace(str(restored), str(checkpoint.path))
                log.warning("trial %s: %s; restarting from scratch", trial_id, msg)
                recovered["recovered"] = f"restarted from scratch: {msg}"[:500]
                drop_metrics(run_dir)
                done["epoch"] = 0
                run(None)
        except Diverged as e:
            # A NaN/inf loss ends this trial as 'diverged': reported, not retried, not a crash.
            wb.finish("diverged", error=str(e))
            final = {k: v for k, v in last.items() if not (isinstance(v, float) and math.isnan(v))}
            # ASHA compares numbers: a diverged student scores below any student that reported
            # (DIVERGED_SCORE); the leaderboard shows it as 'diverged', the study as FAIL.
            final = {**static, "student_params": 0, **final}
            final.update(
                diverged=True, error=str(e)[:500], val_miou=0.0, iou_per_mparam=0.0, score=DIVERGED_SCORE
            )
            report_to_tune(final)
        finally:
            if restored is not None:
                shutil.rmtree(restored, ignore_errors=True)


def restored_checkpoint(restored: Path, run_dir: Path) -> Pointer | Path | None:
    """What a restored checkpoint folder resumes from: its pointer (resolved in ``run_dir``), or the
    ``checkpoint.pt`` it holds (a sweep started before pointers), or None (pruned: start again)."""
    pointer = read_pointer(restored, run_dir)
    if pointer is not None:
        return pointer
    return restored / FULL_CHECKPOINT if (restored / FULL_CHECKPOINT).exists() else None


def asha_stop_epochs(sweep, max_t: int) -> set[int]:
    """The epochs after which ASHA can stop a trial (its rungs; Ray's ``_Bracket`` formula), where
    student.pt must hold the weights the trial ends with; none in a pareto sweep (FIFO: only the last).
    """
    from kdseg.sweep.selection import PARETO

    if sweep.objective == PARETO:
        return set()
    grace, rf = sweep.asha.grace_period, sweep.asha.reduction_factor
    max_t = sweep.asha.max_t or max_t
    rungs = int(np.log(max_t / grace) / np.log(rf) + 1)  # as Ray computes it (np.log, not math.log)
    # Ray stops at the first result whose epoch is >= the rung's milestone
    return {math.ceil(grace * rf**k) for k in range(max(rungs, 0))}


def _node_id() -> str | None:
    """The Ray node this trial (or its rank 0 worker) runs on, in every result: where each trial ran."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray (tests calling the trainable directly)
        return None


def _student_cost(cfg, sweep_dir: Path) -> dict[str, float]:
    """GFLOPs and batch-1 latency of the trial's student, measured once per sweep (kdseg.bench cache).

    Latency is measured on the trial's device with one thread, beside whatever else the node runs at
    that moment: compare it between students of one sweep, not across machines.
    """
    import torch

    from kdseg.deploy.bench import student_cost

    device = "cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu"
    cost = student_cost(
        cfg.student, cfg.data.num_classes, tuple(cfg.data.image_size), cache_dir=sweep_dir, device=device
    )
    return {"gflops": cost["gflops"], "latency_ms": cost["latency_ms"]}
