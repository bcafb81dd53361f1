"""One ``train_kd`` run for tests/test_ddp.py: plain ``python`` (one process) or under ``torchrun``.

    python tests/ddp_worker.py CONFIG.json RUN_DIR OUT_DIR [--batch-independent]

Every process writes ``OUT_DIR/rank<R>.pt``: the world size, the metrics ``train_kd`` returned, its
final student, teacher and feature-adapter weights, and the pixels and images of every confusion
matrix that validation computed (read off ``ConfusionMatrix.compute``; nothing else is changed).

``--batch-independent`` builds every network with ``GroupNorm(1, C)`` in place of each ``BatchNorm2d``
(per-image statistics) and without dropout, so that one process with batch B and two with B/2
compute the same function. With BatchNorm each process normalises with the statistics of its own
share of the batch (torch's SyncBatchNorm runs on GPUs only); dropout masks come from each
process's own random stream.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch import nn


def _batch_independent(model: nn.Module) -> nn.Module:
    """``GroupNorm(1, C)`` for every ``BatchNorm2d``, ``Identity`` for every dropout layer."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, nn.GroupNorm(1, child.num_features))
        elif isinstance(child, nn.modules.dropout._DropoutNd):
            setattr(model, name, nn.Identity())
        else:
            _batch_independent(child)
    return model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--batch-independent", action="store_true")
    args = p.parse_args()

    import kdseg.models
    import kdseg.train.loop as loop
    from kdseg.config import KDConfig
    from kdseg.data import load_data
    from kdseg.metrics import ConfusionMatrix

    if args.batch_independent:
        build = kdseg.models.build_model
        kdseg.models.build_model = lambda *a, **k: _batch_independent(build(*a, **k))

    models: list = []  # the Models of this run: the weights each process ends with

    class Capture(loop.Models):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            models.append(self)

    loop.Models = Capture  # what train_kd builds

    counted: list[tuple[int, int]] = []
    compute = ConfusionMatrix.compute

    def recording(self):
        counted.append((int(self.matrix.sum()), int(self.image_stats[1])))
        return compute(self)

    ConfusionMatrix.compute = recording

    cfg = KDConfig.model_validate(json.loads(Path(args.config).read_text()))
    data = load_data(cfg.data)
    last = loop.train_kd(cfg, data, run_dir=args.run_dir)

    (m,) = models
    rank = int(os.environ.get("RANK", "0"))
    state = {
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "metrics": last,
        "student": {k: v.detach().cpu().clone() for k, v in m.student.state_dict().items()},
        "teacher": {k: v.detach().cpu().clone() for k, v in m.teacher.state_dict().items()},
        "adapters": {k: v.detach().cpu().clone() for k, v in m.objective.state_dict().items()},
        "counted": counted,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / f"rank{rank}.pt")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
