"""Deployable models: any ``nn.Module`` exported to ONNX or TorchScript, then checked against PyTorch.

:func:`export_model` writes an ONNX file (``torch.onnx.export``; dynamic batch, height and width
axes) or a TorchScript file (``torch.jit.trace`` + ``torch.jit.save``), atomically, and then *checks*
it: PyTorch and the exported model (onnxruntime's CPUExecutionProvider, or ``torch.jit.load``) run on
the same random input (batch 2, so the dynamic batch axis is exercised) and the largest absolute
difference of their logits must be <= ``atol`` (1e-4). ONNX is checked a second time at another size
(:func:`second_size`, 128x128 unless that is the export size); if the model does not give PyTorch's
answer there (its graph fixed the size), it is exported again with height and width fixed, and a note
says why. A failed check removes the file and raises :class:`ExportError`. A sweep's best student:
:func:`kdseg.deploy.student_export.export_student` (``kdseg export SWEEP_DIR --format``).

ONNX uses torch's dynamo exporter (``torch.export`` + onnxscript, torch's default and maintained
path) and falls back to the TorchScript-based exporter when onnxscript is not installed or the
dynamo export fails; the result says which one ran. Both need ``pip install 'kdseg[export]'``.

The exported model takes float32 ``[N, 3, H, W]`` images normalised as in training (ImageNet mean/std
by default, see the embedded metadata) and returns logits ``[N, num_classes, H, W]``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdseg.errors import KdsegError
from kdseg.layout import BEST_STUDENT_SUFFIX

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "ATOL",
    "FORMATS",
    "ExportError",
    "export_model",
]

FORMATS = ("onnx", "torchscript")
ATOL = 1e-4
CHECK_BATCH = 2
METADATA_FILE = "kdseg.json"  # TorchScript extra file holding the metadata


class ExportError(KdsegError):
    """A model cannot be exported, its runtime is missing, or the exported model does not match."""


# ------------------------------------------------------------------------------------- helpers


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    out = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _require(module: str, fmt: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(
            f"--format {fmt}: the Python package {module!r} is not installed; "
            "install the export extras with: pip install 'kdseg[export]'  (onnx, onnxruntime, onnxscript)"
        ) from None


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------------------- export


def second_size(h: int, w: int) -> tuple[int, int]:
    """The other input size an ONNX export with dynamic height/width is checked at (multiples of 32)."""
    return (128, 128) if (h, w) != (128, 128) else (96, 160)


def _export_onnx(
    model: nn.Module,
    x: Any,
    path: Path,
    opset: int | None,
    dynamo: bool | None,
    notes: list[str],
    dynamic_hw: bool = True,
) -> str:
    """Write ``path``; returns the exporter that did it ("dynamo" or "torchscript")."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    # AUTO: a size the graph depends on is fixed rather than refused; the second-size check finds it
    dims = {0: batch, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO} if dynamic_hw else {0: batch}
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}

    kw: dict[str, Any] = {"input_names": ["image"], "output_names": ["logits"]}
    if opset is not None:
        kw["opset_version"] = opset
    use_dynamo = _has("onnxscript") if dynamo is None else dynamo
    if use_dynamo and not _has("onnxscript"):
        raise ExportError("--format onnx: the dynamo exporter needs onnxscript: pip install 'kdseg[export]'")
    exporter = "dynamo" if use_dynamo else "torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer chatter; the check below is the judge
        if use_dynamo:
            try:
                torch.onnx.export(
                    model,
                    (x,),
                    str(path),
                    dynamo=True,
                    external_data=False,  # one self-contained file (students are far below 2 GB)
                    dynamic_shapes=(dims,),
                    verbose=False,
                    **kw,
                )
            except Exception as e:
                if dynamo:  # asked for explicitly: no fallback
                    raise ExportError(
                        f"--format onnx: the dynamo exporter failed: {_first_line(e)}"
                    ) from None
                notes.append(f"dynamo exporter failed ({_first_line(e, 160)}); used the TorchScript exporter")
                exporter, use_dynamo = "torchscript", False
                path.unlink(missing_ok=True)
        if not use_dynamo:
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    (x,),
                    str(path),
                    dynamo=False,
                    dynamic_axes={"image": axes, "logits": axes},
                    **kw,
                )
    return exporter


def _add_onnx_metadata(path: Path, metadata: Mapping[str, Any]) -> int:
    """Embed ``metadata`` as ``kdseg.<key>`` metadata_props, validate the model; returns its opset."""
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = f"kdseg.{key}"
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return int(next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0))


def _run_onnx(path: Path, x: Any) -> Any:
    ort = _require("onnxruntime", "onnx")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return sess.run(None, {name: x.numpy()})[0]
    except Exception as e:
        raise ExportError(f"{path}: onnxruntime cannot run the exported model: {_first_line(e)}") from None


def _export_torchscript(model: nn.Module, x: Any, path: Path, metadata: Mapping[str, Any]) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation and TracerWarnings
        with torch.no_grad():
            traced = torch.jit.trace(model, (x,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(dict(metadata))})


def _run_torchscript(path: Path, x: Any) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return loaded(x).numpy()


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | os.PathLike,
    size: tuple[int, int],
    *,
    opset: int | None = None,
    atol: float = ATOL,
    metadata: Mapping[str, Any] | None = None,
    dynamo: bool | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Export ``model`` (float32, CPU, eval mode) for ``[N, C, H, W]`` input and check it.

    Args:
        fmt: ``"onnx"`` or ``"torchscript"``.
        out: the file to write (its folder is created). Nothing is left there if the export or the
            check fails.
        size: ``(H, W)`` of the input; the batch axis is dynamic.
        opset: ONNX opset (default: the exporter's).
        atol: largest allowed absolute difference between PyTorch's and the exported model's logits.
        metadata: strings/JSON-able values embedded in the file (ONNX ``metadata_props`` as
            ``kdseg.<key>``; TorchScript extra file ``kdseg.json``).
        dynamo: ONNX exporter: True dynamo, False TorchScript-based, None dynamo when onnxscript is
            installed (falling back to TorchScript-based if it fails).

    Returns: ``path, format, exporter, opset, runtime, input_shape, output_shape, max_abs_diff, atol,
    bytes, notes``, and ``dynamic_hw`` (ONNX: whether other heights and widths run) with
    ``checked_sizes`` (the ``[H, W]`` the exported model was compared with PyTorch at).

    Raises:
        ExportError: unknown format, missing runtime, the model cannot run at ``size``, the export
            failed, or the exported model's output differs by more than ``atol``.
    """
    import numpy as np
    import torch

    if fmt not in FORMATS:
        raise ExportError(f"--format: unknown format {fmt!r}; use {' or '.join(FORMATS)}")
    if fmt == "onnx":  # fail before any work when the runtime is missing
        _require("onnx", fmt)
        _require("onnxruntime", fmt)
    out = Path(out)
    if out.is_dir():
        raise ExportError(
            f"{out}: is a folder; give the file to write, e.g. {out / ('student' + BEST_STUDENT_SUFFIX[fmt])}"
        )
    h, w = (int(v) for v in size)
    model = model.eval().float().cpu()
    in_ch = next((m.in_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)), 3)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(CHECK_BATCH, in_ch, h, w, generator=gen)
    try:
        with torch.no_grad():
            ref = model(x).numpy()
    except Exception as e:
        raise ExportError(
            f"{type(model).__name__} cannot run on a {h}x{w} input: {_first_line(e)} "
            "(UNet encoders usually need H and W divisible by 32)"
        ) from None
    example = x
    meta = {"input_shape": ["N", in_ch, h, w], "output_shape": ["N", *ref.shape[1:]], **dict(metadata or {})}
    notes: list[str] = []
    dynamic_hw, checked = fmt == "onnx", [[h, w]]
    if dynamic_hw:
        h2, w2 = second_size(h, w)
        x2 = torch.randn(1, in_ch, h2, w2, generator=gen)
        try:
            with torch.no_grad():
                ref2 = model(x2).numpy()
        except Exception as e:  # the architecture itself cannot take another size
            dynamic_hw = False
            notes.append(
                f"height and width are fixed at {h}x{w}: PyTorch cannot run the model at {h2}x{w2} "
                f"({_first_line(e, 160)})"
            )
        else:
            meta.update(input_shape=["N", in_ch, "H", "W"], output_shape=["N", ref.shape[1], "H", "W"])

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as e:
        raise ExportError(f"{out}: cannot write here ({e.strerror or e})") from None
    try:
        tmp = tmp_dir / out.name
        try:
            if fmt == "onnx":
                exporter = _export_onnx(model, example, tmp, opset, dynamo, notes, dynamic_hw)
                if dynamic_hw:
                    why = _other_size_problem(tmp, x2, ref2, atol)
                    if why is None:
                        checked.append([h2, w2])
                    else:  # the graph fixed the size somewhere: export it as what it is
                        dynamic_hw = False
                        notes.append(
                            f"height and width are fixed at {h}x{w}: exported with dynamic ones, it {why}"
                        )
                        meta.update(input_shape=["N", in_ch, h, w], output_shape=["N", *ref.shape[1:]])
                        tmp.unlink(missing_ok=True)
                        exporter = _export_onnx(model, example, tmp, opset, dynamo, notes, False)
                used_opset = _add_onnx_metadata(tmp, meta)
                runtime = (
                    "onnxruntime " + _require("onnxruntime", fmt).__version__ + " (CPUExecutionProvider)"
                )
            else:
                _export_torchscript(model, example, tmp, meta)
                exporter, used_opset = "torch.jit.trace", None
                runtime = f"torch.jit.load (torch {torch.__version__})"
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"{out}: {fmt} export failed: {_first_line(e)}") from None
        got = _run_onnx(tmp, x) if fmt == "onnx" else _run_torchscript(tmp, x)
        if got.shape != ref.shape:
            raise ExportError(
                f"{out}: the exported model returns shape {list(got.shape)}, PyTorch {list(ref.shape)}"
            )
        diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
        if not diff <= atol:  # also catches NaN
            raise ExportError(
                f"{out}: the exported model does not match PyTorch: max |diff| {diff:.3g} > {atol:g} "
                f"on random {list(x.shape)} input ({runtime}); nothing was written"
            )
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return {
        "path": str(out),
        "format": fmt,
        "exporter": exporter,
        "opset": used_opset,
        "runtime": runtime,
        "input_shape": list(x.shape),
        "output_shape": list(ref.shape),
        "max_abs_diff": diff,
        "atol": atol,
        "bytes": out.stat().st_size,
        "notes": notes,
        "dynamic_hw": dynamic_hw,
        "checked_sizes": checked,
    }


def _other_size_problem(path: Path, x: Any, ref: Any, atol: float) -> str | None:
    """Why the ONNX model at ``path`` does not reproduce ``ref`` on ``x`` (None when it does)."""
    import numpy as np

    size = "x".join(map(str, x.shape[2:]))
    try:
        got = _run_onnx(path, x)
    except ExportError as e:
        return f"cannot run at {size} ({str(e).split(': ', 2)[-1][:160]})"
    if got.shape != ref.shape:
        return f"returns shape {list(got.shape)} at {size}, PyTorch {list(ref.shape)}"
    diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    return None if diff <= atol else f"differs from PyTorch at {size} (max |diff| {diff:.3g} > {atol:g})"
