"""``kdseg export SWEEP_DIR``: the best config, or with --format the best student as a model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from kdseg.cli.bench import parse_size
from kdseg.layout import (
    best_student_file,
)

if TYPE_CHECKING:  # pragma: no cover
    pass
from kdseg.deploy.model_export import FORMATS, ExportError
from kdseg.deploy.student_export import export_student

# --------------------------------------------------------------------------------------- command


def add_export_format_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--format``, ``--size`` and ``--opset`` to the ``kdseg export`` parser."""
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="export the best trial's trained student as a model file (ONNX or TorchScript) instead of "
        "its config; -o names the file (default: SWEEP_DIR/best_student.onnx|.torchscript.pt)",
    )
    parser.add_argument(
        "--size", type=parse_size, help="with --format: input HxW (default: the trial's data.image_size)"
    )
    parser.add_argument("--opset", type=int, help="with --format onnx: ONNX opset (default: the exporter's)")


def run_export_format(args: argparse.Namespace) -> int:
    """``kdseg export SWEEP_DIR --format F [-o FILE] [--rank-by KEY] [--size HxW] [--opset N]``."""
    from kdseg.fileio import require_writable

    fmt = args.format
    out = Path(args.output) if getattr(args, "output", None) else best_student_file(args.sweep_dir, fmt)
    if getattr(args, "opset", None) is not None and fmt != "onnx":
        raise ExportError("--opset: only with --format onnx")
    require_writable(out.parent, "exported model")
    r = export_student(
        args.sweep_dir,
        fmt,
        out,
        rank_by=getattr(args, "rank_by", None),
        size=getattr(args, "size", None),
        opset=getattr(args, "opset", None),
    )
    miou = f", val mIoU {r['val_miou']:.4f}" if isinstance(r.get("val_miou"), (int, float)) else ""
    how = f"{r['exporter']} exporter, opset {r['opset']}" if fmt == "onnx" else r["exporter"]
    print(
        f"wrote {r['path']} ({fmt}, {how}, {r['bytes'] / 2**20:.1f} MiB): trial {r['trial_id']} student "
        f"{r['student']} ({r['params'] / 1e6:.2f}M params{miou})"
    )
    print(
        f"check: {r['runtime']} vs PyTorch on random {'x'.join(map(str, r['input_shape']))} input: "
        f"max |diff| {r['max_abs_diff']:.2e} <= {r['atol']:g}  OK"
    )
    if r.get("dynamic_hw"):
        sizes = " and ".join("x".join(map(str, hw)) for hw in r["checked_sizes"])
        print(f"input: any batch, height and width the architecture accepts (checked at {sizes})")
    for note in r.get("notes", []):
        print(f"note: {note}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.format:  # the student itself, as a runtime can load it
        return run_export_format(args)
    from kdseg.deploy.best_config import export_config

    path, row = export_config(args.sweep_dir, out=args.output, rank_by=args.rank_by)
    print(
        f"wrote {path}: trial {row['trial_id']} ({row.get('teacher')} -> {row.get('student')}, "
        f"val mIoU {row.get('val_miou'):.4f}); train it with: kdseg train {path}"
    )
    return 0
