"""Checks a sweep passes before Ray starts and before any folder is created.

What the trials would otherwise find one by one (every trial failing the same way, or waiting forever):

- **models**: every distinct teacher and student a trial can get (the base config, each value of a
  categorical domain, each grid point) is built once, as a trial builds it: checkpoints are read with
  ``torch.load(weights_only=True)`` and must fit the model; ``weights: PATH`` must fit the encoder;
  ``weights: imagenet`` must be downloadable or cached (offline: one message saying how to fix it).
- **resources**: ``sweep.resources_per_trial`` must fit on one node of the cluster: on local Ray, this
  machine's CPU count and visible GPUs (Ray would otherwise wait forever for a GPU it does not have).

Every failure is a :class:`~kdseg.errors.KdsegError` naming the space file and the key.
"""

from __future__ import annotations

import os
from typing import Any

from kdseg.errors import KdsegError


def preflight(spec: Any, address: str | None = None) -> None:
    """Refuse ``spec`` (a :class:`kdseg.space.SweepSpec`) if a trial could not start; see the module doc."""
    from kdseg.sweep.workers import check_workers

    check_resources(spec, address)
    check_workers(spec, address)
    check_models(spec)


def check_resources(spec: Any, address: str | None = None) -> None:
    """A trial's CPU/GPU request must fit this machine (local Ray); a cluster is checked by Ray."""
    if address:  # the cluster's nodes are not known before joining it
        return
    src = spec.source or "sweep"
    r = spec.sweep.resources_per_trial
    cpus = os.cpu_count() or 1
    if r.cpu > cpus:
        raise KdsegError(
            f"{src}: sweep.resources_per_trial.cpu: {r.cpu} is more than this machine's {cpus} CPUs; "
            f"no trial could start (use at most {cpus}, or --address a cluster with larger nodes)"
        )
    if r.gpu > 0:
        gpus = visible_gpus()
        if gpus == 0:
            raise KdsegError(
                f"{src}: sweep.resources_per_trial.gpu: {r.gpu}, but this machine has no GPU Ray can use; "
                f"no trial could start (set gpu: 0, or --address a cluster with GPUs)"
            )
        if r.gpu > gpus:
            raise KdsegError(
                f"{src}: sweep.resources_per_trial.gpu: {r.gpu} is more than this machine's {gpus} GPUs"
            )


def visible_gpus() -> int:
    """The GPUs local Ray would detect (CUDA, honouring ``CUDA_VISIBLE_DEVICES``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "NoDevFiles"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def trial_models(spec: Any) -> list[tuple[str, Any, int, str]]:
    """``(role, ModelConfig, num_classes, where)`` for every distinct model a trial can build."""
    from kdseg.sweep.space import default_params, initial_points, trial_config

    configs = [(spec.base_config, "base config")]
    base_point = initial_points(spec)[:1] or [default_params(spec)]
    points = list(initial_points(spec))
    for key, d in spec.space.items():
        if d.categorical:
            for label in d.labels:
                points.append({**base_point[0], key: label})
    for p in points:
        shown = ", ".join(f"{k}={v}" for k, v in p.items())
        configs.append((trial_config(spec, p), f"trial {{{shown}}}"))
    seen: set[str] = set()
    out = []
    for cfg, where in configs:
        roles = ["student"] + ([] if cfg.distill.mode == "none" else ["teacher"])
        for role in roles:
            m = getattr(cfg, role)
            key = f"{role}:{cfg.data.num_classes}:{m.model_dump_json()}"
            if key not in seen:
                seen.add(key)
                out.append((role, m, cfg.data.num_classes, where))
    return out


def check_models(spec: Any) -> None:
    """Build each distinct teacher/student once (weights-only loads, shape checks, downloads)."""
    from kdseg.errors import CheckpointError, WeightsError

    src = spec.source or "sweep"
    for role, m, num_classes, where in trial_models(spec):
        if m.checkpoint == "train":  # the teacher stage trains it: check only its weights here
            m = m.model_copy(update={"checkpoint": None})
        if m.checkpoint is None and m.weights is None:
            continue  # random initialisation cannot fail for want of a file
        from kdseg.models import build_model  # torch and smp: only when a model loads a file

        try:
            build_model(m, num_classes, role=role)
        except (CheckpointError, WeightsError) as e:
            context = "" if where == "base config" else f" ({where})"
            raise type(e)(f"{src}: {e}{context}") from None
