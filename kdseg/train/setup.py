"""What a training run is built from: seeds, the ``Accelerator``, the models and objective, optimisers and
schedules (and how many steps each schedule spans)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from kdseg.config import KDConfig
from kdseg.errors import CheckpointError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed epoch ``epoch`` (0-based) starts from: a resumed run sees the same randomness."""
    return seed * 100_003 + epoch


def make_accelerator(cfg: KDConfig):
    """An ``accelerate.Accelerator`` for this config (fresh state each call: trials share processes)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    use_cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        from kdseg.errors import ConfigError

        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available")
    amp = cfg.train.amp
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if use_cuda else "off"
    AcceleratorState._reset_state(reset_partial_state=True)
    # A seedable sampler shuffles epoch e with seed + e: a resumed run sees the same batches.
    loader_cfg = DataLoaderConfiguration(
        use_seedable_sampler=True, data_seed=cfg.train.seed, non_blocking=use_cuda
    )
    return Accelerator(
        cpu=not use_cuda, mixed_precision="no" if amp == "off" else amp, dataloader_config=loader_cfg
    )


def build_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``train.optimizer`` over the parameters that require gradients (PyTorch's default implementation)."""
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)


def build_scheduler(name: str, opt: torch.optim.Optimizer, total_steps: int):
    """``train.scheduler`` over ``total_steps`` optimiser steps."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    if name == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=max(total_steps, 1), power=0.9)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


class Models:
    """Teacher, student, their feature taps and the distillation objective, built from a config."""

    def __init__(self, cfg: KDConfig, num_classes: int, ignore_index: int, class_weights=None):
        from kdseg.distill import KDObjective
        from kdseg.models import FeatureTaps, build_model, count_params, feature_shapes

        d = cfg.distill
        self.student = build_model(cfg.student, num_classes, role="student")
        self.student_params = count_params(self.student)
        self.teacher = None if d.mode == "none" else build_teacher(cfg, num_classes)
        self.teacher_params = count_params(self.teacher) if self.teacher is not None else 0
        self.teacher_trains = self.teacher is not None and cfg.teacher_trains
        if self.teacher is not None and not self.teacher_trains:
            self.teacher.eval().requires_grad_(False)
        self.feature_sites = [s for s in d.sites if s != "logits"] if self.teacher is not None else []
        s_shapes = t_shapes = None
        if self.feature_sites:
            size = tuple(cfg.data.image_size)
            s_shapes = feature_shapes(self.student, self.feature_sites, size)
            t_shapes = feature_shapes(self.teacher, self.feature_sites, size)
        self.objective = KDObjective(
            d,
            num_classes=num_classes,
            ignore_index=ignore_index,
            class_weights=class_weights,
            student_shapes=s_shapes,
            teacher_shapes=t_shapes,
        )
        self.s_taps = FeatureTaps(self.student, self.feature_sites)
        self.t_taps = FeatureTaps(self.teacher, self.feature_sites) if self.teacher is not None else None

    def close(self) -> None:
        """Remove the feature taps' hooks."""
        self.s_taps.close()
        if self.t_taps is not None:
            self.t_taps.close()


def build_teacher(cfg: KDConfig, num_classes: int) -> nn.Module:
    """The teacher; in offline mode a checkpoint problem says how to get a trained teacher."""
    from kdseg.models import build_model

    try:
        return build_model(cfg.teacher, num_classes, role="teacher")
    except CheckpointError as e:
        if cfg.distill.mode != "offline":
            raise
        raise CheckpointError(
            f"{e}. distill.mode 'offline' distils from a trained, frozen teacher: train it first with "
            "this config and --set distill.mode=none --set student.arch=<teacher.arch> "
            "--set student.encoder=<teacher.encoder>, then point teacher.checkpoint at that run's "
            "student.pt (or at the checkpoint.pt of an online run); see experiments/README.md"
        ) from None


def student_side(student: nn.Module, objective: nn.Module) -> list[nn.Parameter]:
    """What the student's optimiser updates and ``grad_clip`` bounds together: student and adapters."""
    return [*student.parameters(), *objective.parameters()]


def update_counts(cfg: KDConfig, steps_per_epoch: int, teacher_trains: bool) -> tuple[int, int]:
    """Optimiser steps of the student and of the teacher over the run: what each schedule spans.

    ``alternation: teacher_student`` steps each network on half of the steps only.
    """
    from kdseg.distill import phase_for

    n_s = n_t = 0
    for epoch in range(cfg.train.epochs):
        for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch):
            phase = phase_for(cfg.distill.alternation, epoch, step, teacher_trains, mode=cfg.distill.mode)
            n_s += phase.update_student
            n_t += phase.update_teacher
    return n_s, n_t
