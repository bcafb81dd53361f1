"""Trials that span several workers: ``sweep.resources_per_trial: {workers: N, cpu: C, gpu: G}``.

Each trial is a Ray Train data-parallel job driven from its Tune trial, as Ray's "Hyperparameter Tuning
with Ray Tune" guide for Ray Train V2 describes (``RAY_TRAIN_V2_ENABLED``, on by default in Ray 2.60;
kdseg refuses a ``workers`` sweep with it turned off):

- the Tune trial (:func:`kd_train_driver`) is the Train driver: it reserves no CPU or GPU (256 MiB of
  memory) and runs a ``ray.train.torch.TorchTrainer`` with ``ScalingConfig(num_workers=N,
  resources_per_worker={CPU: C, GPU: G})`` (torch's process group: gloo on CPU, NCCL on GPUs) and a
  ``RunConfig`` whose storage path and name depend on the trial only (``SWEEP/tune/<trial>/train``):
  a restarted trial, ``kdseg resume`` included, restores the Train run from its latest checkpoint.
  Without ``sweep.max_concurrent``, as many trials run at once as the cluster's CPUs (and GPUs) hold
  trials' workers (the guide's advice: the drivers themselves reserve nothing that would limit them).
- every worker (:func:`train_worker`) runs the same :func:`kdseg.train.train_kd`, which finds the process
  group Ray Train set up (accelerate reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and the initialised
  ``torch.distributed``), so the trial trains as under ``torchrun``: sharded batches, averaged gradients,
  exact validation. Each result carries ``workers`` (the world size) and ``worker_nodes`` (the Ray
  nodes the workers run on). Every rank calls ``ray.train.report`` once per epoch (a barrier); rank 0 with the
  epoch's checkpoint: a folder holding a pointer to the full checkpoint it wrote once into ``run/``
  (:mod:`kdseg.checkpoint`), which Ray Train copies into the Train run's storage. Rank 0 is
  the trial's one writer (``run/``: metrics.jsonl, student.pt, images, its W&B run) and computes the
  trial's result as a one-process trial does (:func:`kdseg.sweep.trainable.run_trial`).
- rank 0 hands each result to the Tune trial, which reports it to Tune (ASHA, the Optuna searcher, the
  live table and the leaderboard see it as a one-process trial's) and hands Tune's decision back before
  any rank trains on: a trial ASHA stops ends at that epoch, every rank returning, the Train run ending
  cleanly. (Ray's ``TuneReportCallback`` passes results without waiting for the decision: a stopped
  trial would train one epoch more, and Tune would end the driver while the Train run still held its
  workers' placement group.)

Checkpoints are Ray Train's (``SWEEP/tune/<trial>/train/checkpoint_*``, the latest kept, each a pointer
to ``run/checkpoint-eNNNN.pt``), not Tune's; every rank resumes by following the pointer (``run/`` is on the
sweep's storage, which every node mounts). The sweep prunes them when the trial finishes, as it prunes a
one-process trial's. The dataset goes to the workers through the object store (one ``ray.put`` per trial).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from kdseg.errors import CheckpointError, KdsegError
from kdseg.layout import CHECKPOINT_POINTER, FULL_CHECKPOINT, STUDENT_CHECKPOINT, TUNE_DIR, trial_run_dir

TRAIN_RUN = "train"  # the Train run's folder in the trial's: SWEEP/tune/<trial>/train
# The Tune trial only drives the Train run; its workers hold the CPUs and GPUs (Ray's guide). A Tune
# trial must reserve something: memory, which its process uses, and which no worker then waits for.
DRIVER_RESOURCES = {"memory": 256 * 2**20}


def train_run_dir(sweep_dir: Path, trial_id: str) -> Path:
    return Path(sweep_dir) / TUNE_DIR / trial_id / TRAIN_RUN


def uses_workers(spec: Any) -> bool:
    return spec.sweep.resources_per_trial.workers is not None


def multi_worker_trainable(spec: Any, data: Any, sweep_dir: Path):
    """The Tune trainable of a ``workers`` sweep: :func:`kd_train_driver` with the dataset and spec."""
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(kd_train_driver, spec=spec, data=data, sweep_dir=str(sweep_dir)),
        DRIVER_RESOURCES,
    )


def default_concurrency(spec: Any) -> int | None:
    """How many Train runs fit the cluster at once (Ray's guide: cap the drivers, which hold nothing).

    ``sweep.max_concurrent`` when set; else the cluster's CPUs (and GPUs) over what one trial's
    workers reserve, at least 1.
    """
    if spec.sweep.max_concurrent is not None or not uses_workers(spec):
        return spec.sweep.max_concurrent
    import ray

    r = spec.sweep.resources_per_trial
    total = ray.cluster_resources()
    fits = int(total.get("CPU", 0) // (r.workers * r.cpu))
    if r.gpu:
        fits = min(fits, int(total.get("GPU", 0) // (r.workers * r.gpu)))
    return max(fits, 1)


def check_workers(spec: Any, address: str | None = None) -> None:
    """Refuse a ``workers`` sweep Ray Train cannot run here (exit 2, before Ray starts): Train V2 turned
    off, or (local Ray) a trial's workers together needing more CPUs or GPUs than this machine has."""
    if not uses_workers(spec):
        return
    import os

    from kdseg.sweep.ray_private import TRAIN_V2_ENV, train_v2_enabled

    src = spec.source or "sweep"
    r = spec.sweep.resources_per_trial
    if not address:  # a cluster's nodes are not known before joining it
        from kdseg.sweep.preflight import visible_gpus

        have = {"cpu": os.cpu_count() or 1, **({"gpu": visible_gpus()} if r.gpu else {})}
        for kind, count in have.items():
            per = getattr(r, kind)
            if per * r.workers > count:
                raise KdsegError(
                    f"{src}: sweep.resources_per_trial: workers: {r.workers} x {kind}: {per} is more than "
                    f"this machine's {count} {kind.upper()}s; no trial could start (fewer workers, or "
                    f"--address a cluster)"
                )
    if not train_v2_enabled():
        raise KdsegError(
            f"{src}: sweep.resources_per_trial.workers needs Ray Train V2, but {TRAIN_V2_ENV} "
            f"turns it off in this environment; unset it (or set it to 1)"
        )


class TrialStopped(SystemExit):
    """Raised on every worker of a trial that Tune stopped (ASHA, max_t): the workers return normally,
    so the Train run ends cleanly (its placement group released); W&B records the run as stopped."""


# How long a stopped trial's actor waits for its Train run to wind down before Tune ends it.
STOP_TIMEOUT_S = 60.0


def kd_train_driver(params: dict[str, Any], spec=None, data=None, sweep_dir: str | None = None) -> None:
    """A Tune trial that runs its training as a Ray Train job of ``workers`` processes."""
    from kdseg.sweep.trainable import TrialExit

    exit_ = TrialExit(timeout=STOP_TIMEOUT_S)  # a stop waits for the Train run to end (below)
    try:
        _drive(params, spec, data, sweep_dir, exit_.report)
    finally:
        exit_.done.set()


def _drive(params: dict[str, Any], spec, data, sweep_dir: str, report_to_tune) -> None:
    """Run the trial's Train job; pass each of rank 0's results to Tune and Tune's answer back.

    Rank 0 puts each epoch's result on ``results`` (after ``ray.train.report``) and waits on ``replies``
    for ``go`` or ``stop``: Tune's decision on that very epoch, so a stopped trial trains no epoch more.
    (Ray's ``TuneReportCallback`` hands results over without waiting for the decision, and Tune then
    ends the driver mid-run.) ``None`` on ``results``: rank 0 has finished.
    """
    import threading

    import ray
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    r = spec.sweep.resources_per_trial
    trial_id = tune.get_context().get_trial_id()
    run = train_run_dir(Path(sweep_dir), trial_id)
    results = Queue(maxsize=1, actor_options={"num_cpus": 0})
    replies = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "params": params,
            "spec": spec,
            "data": ray.put(data),
            "sweep_dir": sweep_dir,
            "trial_id": trial_id,
            "results": results,
            "replies": replies,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=r.workers, use_gpu=r.gpu > 0, resources_per_worker={"CPU": r.cpu, "GPU": r.gpu}
        ),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=str(run.parent),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            # a failed trial is retried by Tune (sweep.max_failures), from the Train run's checkpoint
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as e:  # raised in the trial's thread below
            outcome["error"] = e

    thread = threading.Thread(target=fit, name="kdseg-train-run", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = results.get(timeout=1.0)
            except Empty:
                if thread.is_alive():
                    continue
                break  # the run ended without rank 0 saying so (a worker died)
            if item is None:
                break
            try:
                report_to_tune(item)
            except BaseException:  # Tune stopped the trial: the workers stop, the run ends, then we do
                replies.put("stop")
                thread.join(STOP_TIMEOUT_S)
                raise
            replies.put("go")
        thread.join()
    finally:
        for q in (results, replies):
            try:
                q.shutdown()
            except Exception:
                pass
    if "error" in outcome:
        raise outcome["error"]


def _report(metrics: dict[str, Any], checkpoint=None) -> None:
    import ray.train

    # the checkpoint is a pointer's temporary folder, which run_trial removes once the report returns
    ray.train.report(metrics, checkpoint=checkpoint, delete_local_checkpoint_after_upload=False)


def _agree(stop: bool | None) -> None:
    """Rank 0's ``stop`` on every rank (a broadcast); raises :class:`TrialStopped` everywhere if set."""
    import torch.distributed as dist

    box = [stop]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    if box[0]:
        raise TrialStopped(0)


def _worker_nodes() -> str:
    """The Ray nodes the trial's workers run on (their ids, sorted, comma-separated): a collective."""
    import ray
    import torch.distributed as dist

    nodes = [ray.get_runtime_context().get_node_id()]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        nodes = [None] * dist.get_world_size()
        dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    return ",".join(sorted(set(nodes)))


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker of a trial: rank 0 runs the trial, the others train beside it."""
    import ray
    import ray.train

    from kdseg.sweep.trainable import run_trial

    data = ray.get(config["data"])
    checkpoint = ray.train.get_checkpoint()
    context = ray.train.get_context()
    nodes = _worker_nodes()
    try:
        if context.get_world_rank() != 0:
            _follow(config, data, checkpoint)
            return
        workers = context.get_world_size()
        results, replies = config["results"], config["replies"]

        def report(metrics: dict[str, Any], checkpoint=None) -> None:
            metrics = {**metrics, "workers": workers, "worker_nodes": nodes}
            _report(metrics, checkpoint)  # every rank: a barrier; the checkpoint persisted
            results.put(metrics)  # to Tune, through the trial's actor
            _agree(replies.get() == "stop")

        try:
            run_trial(
                config["params"],
                config["spec"],
                data,
                config["sweep_dir"],
                report,
                trial_id=config["trial_id"],
                checkpoint=checkpoint,
                checkpoint_type=ray.train.Checkpoint,
                report_every_process=True,
            )
        finally:
            results.put(None)
    except TrialStopped:
        return  # Tune stopped the trial: a clean end of the Train run


def _follow(config: dict[str, Any], data: Any, checkpoint) -> None:
    """A rank other than 0: the same ``train_kd`` from the same checkpoint, taking the same turns as rank 0
    (a damaged checkpoint: again from scratch; a divergence: one last report)."""
    from kdseg.sweep.space import trial_config
    from kdseg.sweep.teacher_stage import fill_teacher
    from kdseg.sweep.trainable import restored_checkpoint
    from kdseg.train import Diverged, train_kd

    sweep_dir = config["sweep_dir"]
    cfg = fill_teacher(trial_config(config["spec"], config["params"]), sweep_dir)
    run_dir = trial_run_dir(Path(sweep_dir), config["trial_id"])  # written by rank 0 only
    restored = resume = damaged = None
    if checkpoint is not None:
        restored = Path(tempfile.mkdtemp(prefix="kdseg-restore-"))
        checkpoint.to_directory(str(restored))
        try:
            resume = restored_checkpoint(restored, run_dir)  # the pointer rank 0 follows too
        except CheckpointError as e:
            damaged = e

    def report(metrics: dict[str, Any], _ckpt_dir=None) -> None:
        _report({"epoch": metrics.get("epoch")})
        _agree(None)

    def run(resume_from) -> None:
        train_kd(
            cfg,
            data,
            report,
            run_dir=run_dir,
            resume=resume_from,
            keep_last_checkpoint=False,
            report_every_process=True,
        )

    try:
        try:
            if damaged is not None:
                raise damaged
            run(resume)
        except CheckpointError:
            if resume is None and damaged is None:
                raise
            run(None)
    except Diverged:
        report({})  # rank 0 reports the trial's final result once more
    finally:
        if restored is not None:
            shutil.rmtree(restored, ignore_errors=True)


def prune_train_checkpoints(sweep_dir: Path, trial_id: str) -> None:
    """Drop the pointers, full and student checkpoints of a finished trial's Train run (run/ keeps the
    student; the files the pointers name are pruned with the trial's run/)."""
    for ckpt in train_run_dir(sweep_dir, trial_id).glob("checkpoint_*/"):
        for name in (CHECKPOINT_POINTER, FULL_CHECKPOINT, STUDENT_CHECKPOINT):
            (ckpt / name).unlink(missing_ok=True)
