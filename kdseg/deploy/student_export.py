"""A sweep's best student as a deployable file: ``kdseg export SWEEP_DIR --format onnx|torchscript``.

:func:`export_student` picks the sweep's best trial (:func:`kdseg.deploy.best_config.pick_trial`), builds
its student from the trial's ``run/config.yaml`` (no pretrained download: the trained weights replace
them), loads ``run/student.pt`` (``weights_only=True``), describes its input in the file's metadata
(size, normalisation, classes) and exports and checks it with :func:`kdseg.deploy.model_export.export_model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kdseg.deploy.model_export import FORMATS, ExportError, export_model
from kdseg.errors import KdsegError
from kdseg.layout import CONFIG_FILE, STUDENT_CHECKPOINT, best_student_file, trial_run_dir

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _kdseg_version() -> str:
    try:
        from importlib.metadata import version

        return version("kdseg")
    except Exception:  # pragma: no cover - not installed (running from a source tree)
        return "unknown"


def _describe(m: Any) -> str:
    if m.arch == "lightweight_unet":
        return f"lightweight_unet(width={m.width:g})"
    return m.arch if m.arch == "fcn_resnet50" else f"{m.arch}/{m.encoder}"


def export_student(
    sweep_dir: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None = None,
    rank_by: str | None = None,
    size: tuple[int, int] | None = None,
    opset: int | None = None,
) -> dict[str, Any]:
    """Export the best (or best-by-``rank_by``) trial's trained student and check it.

    ``size`` defaults to the trial's ``data.image_size``; ``out`` to :func:`kdseg.layout.best_student_file`. Returns
    :func:`export_model`'s figures plus ``trial_id``, ``student``, ``params``, ``val_miou``, ``config``
    and ``checkpoint``.
    """
    from kdseg.config import load_config
    from kdseg.deploy.best_config import pick_trial
    from kdseg.errors import CheckpointError
    from kdseg.models import build_model, count_params, load_model_checkpoint
    from kdseg.models.registry import own_archs

    if fmt not in FORMATS:
        raise ExportError(f"--format: unknown format {fmt!r}; use {' or '.join(FORMATS)}")
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise KdsegError(f"{sweep_dir}: no such sweep folder")
    out = Path(out) if out else best_student_file(sweep_dir, fmt)
    if out.suffix.lower() in (".yaml", ".yml"):
        raise ExportError(f"-o {out}: with --format {fmt} the output is a model file, not a YAML config")
    row = pick_trial(sweep_dir, rank_by)
    run_dir = trial_run_dir(sweep_dir, str(row["trial_id"]))
    cfg_file, ckpt = run_dir / CONFIG_FILE, run_dir / STUDENT_CHECKPOINT
    if not cfg_file.exists():
        raise KdsegError(f"{cfg_file}: the trial's config is missing (was the sweep folder moved or pruned?)")
    if not ckpt.exists():
        raise CheckpointError(
            f"{ckpt}: the trial's trained student is missing (the trial saved no checkpoint, or the "
            "sweep folder was pruned); try another trial with --rank-by"
        )
    cfg = load_config(cfg_file)
    # The trained weights replace everything: never download pretrained ones, never read the
    # original checkpoint (it may have moved with the sweep).
    scfg = cfg.student.model_copy(update={"weights": None, "checkpoint": None})
    model = build_model(scfg, cfg.data.num_classes, role="student")
    load_model_checkpoint(model, ckpt, role="student")
    size = tuple(size) if size else tuple(cfg.data.image_size)
    norm = cfg.data.augment.normalize
    metadata = {
        "kdseg_version": _kdseg_version(),
        "sweep": sweep_dir.name,
        "trial_id": str(row["trial_id"]),
        "arch": scfg.arch,
        **({"width": scfg.width} if scfg.arch == "lightweight_unet" else {}),
        **({} if scfg.arch in own_archs() else {"encoder": scfg.encoder}),
        "num_classes": cfg.data.num_classes,
        "input_size": list(size),
        "input": "float32 RGB NCHW, pixel/255 then (x - mean) / std"
        if norm == "imagenet"
        else "float32 RGB NCHW, pixel/255",
        "mean": list(_IMAGENET_MEAN) if norm == "imagenet" else [0.0, 0.0, 0.0],
        "std": list(_IMAGENET_STD) if norm == "imagenet" else [1.0, 1.0, 1.0],
        "val_miou": row.get("val_miou"),
    }
    result = export_model(model, fmt, out, size, opset=opset, metadata=metadata)
    result.update(
        trial_id=str(row["trial_id"]),
        student=_describe(scfg),
        params=count_params(model),
        val_miou=row.get("val_miou"),
        config=str(cfg_file),
        checkpoint=str(ckpt),
    )
    return result
