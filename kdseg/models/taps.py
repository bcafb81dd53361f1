"""Feature taps: intermediate tensors of a model at named sites, captured by forward hooks.

Sites (``kdseg.config.SITES``), every value a list of tensors:

============  =====================================  ==========================  ==============================
site          smp models (Unet, FPN, DeepLabV3+ ...)  fcn_resnet50                lightweight_unet
============  =====================================  ==========================  ==============================
encoder       encoder outputs minus the input-size    backbone layer1..layer4     each stage output before
              stage(s) and empty dummy stages         (4 tensors, stride 4, 8,    pooling (3 tensors, stride
              (5 tensors for depth-5 encoders)        8, 8)                       1, 2, 4)
bottleneck    the encoder's last output (1 tensor)    layer4 (1 tensor)           bottleneck block output
decoder       ``model.decoder``'s output, the input   classifier's ReLU output,   last decoder block output
              of the segmentation head (1 tensor)     before dropout and its      (1 tensor, full resolution)
                                                      last 1x1 conv (1 tensor)
logits        the model's output (1 tensor)           the model's output          the model's output
============  =====================================  ==========================  ==============================

Hooks store the tensors themselves (no detach, no copy), so losses on them backpropagate into
the model. Sites not asked for get no hook; ``FeatureTaps(model, [])`` registers nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from kdseg.config import SITES
from kdseg.models.registry import ARCHS, arch_of

__all__ = [
    "FeatureTaps",
    "TapPoint",
    "feature_shapes",
    "output_tap",
    "tap_modules",
    "torchvision_taps",
    "unwrap",
]

Extract = Callable[[tuple[Any, ...], Any], list[torch.Tensor]]


@dataclass(frozen=True)
class TapPoint:
    """Where a site is read: a forward hook on ``module`` mapping (inputs, output) to tensors."""

    module: nn.Module
    extract: Extract
    path: str  # human-readable location, e.g. "encoder" or "backbone.layer3"


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / DataParallel / torch.compile / accelerate wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module):
            model = inner
        else:
            break
    return model


# ---------------------------------------------------------------------------------- extractors


def _first_tensor(out: Any) -> torch.Tensor:
    """The main tensor of an output: itself, the first of a tuple/list, or ``out["out"]``."""
    if torch.is_tensor(out):
        return out
    if isinstance(out, dict):
        return out["out"] if "out" in out else next(iter(out.values()))
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    raise TypeError(f"cannot find a tensor in a {type(out).__name__} output")


def _output(inputs: tuple[Any, ...], out: Any) -> list[torch.Tensor]:
    return [_first_tensor(out)]


def _encoder_list(out: Any) -> list[torch.Tensor]:
    # smp encoders return a list; DPT's ViT encoder returns (features, prefix_tokens).
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], (list, tuple)):
        out = out[0]
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    return list(out)


def _smp_encoder_stages(inputs: tuple[Any, ...], out: Any) -> list[torch.Tensor]:
    feats = _encoder_list(out)
    x = inputs[0] if inputs and torch.is_tensor(inputs[0]) else None
    in_size = None if x is None else x.shape[-2:]
    return [f for f in feats if f.shape[1] > 0 and (in_size is None or f.shape[-2:] != in_size)]


def _smp_encoder_last(inputs: tuple[Any, ...], out: Any) -> list[torch.Tensor]:
    return [_encoder_list(out)[-1]]


# ------------------------------------------------------------------------------------- lookup


def output_tap(module: nn.Module, path: str) -> TapPoint:
    """A tap on ``module``'s output (its main tensor)."""
    return TapPoint(module, _output, path)


def torchvision_taps(model: nn.Module) -> dict[str, list[TapPoint]] | None:
    """Sites of a torchvision-style segmentation model (``backbone`` with ``layer1..4`` and a
    ``classifier`` ``nn.Sequential``: FCN, DeepLabV3), or None when ``model`` is not one."""
    backbone = getattr(model, "backbone", None)
    classifier = getattr(model, "classifier", None)
    if backbone is None or not hasattr(backbone, "layer4") or not isinstance(classifier, nn.Sequential):
        return None
    layers = [f"layer{i}" for i in range(1, 5)]
    # FCNHead / DeepLabHead: [..., BN, ReLU, (Dropout), Conv1x1]: read the last ReLU.
    relu_idx = max(i for i, m in enumerate(classifier) if isinstance(m, nn.ReLU))
    return {
        "encoder": [output_tap(getattr(backbone, n), f"backbone.{n}") for n in layers],
        "bottleneck": [output_tap(backbone.layer4, "backbone.layer4")],
        "decoder": [output_tap(classifier[relu_idx], f"classifier.{relu_idx}")],
    }


def _smp_taps(model: nn.Module) -> dict[str, list[TapPoint]] | None:
    if not all(isinstance(getattr(model, a, None), nn.Module) for a in ("encoder", "decoder")):
        return None
    return {
        "encoder": [TapPoint(model.encoder, _smp_encoder_stages, "encoder")],
        "bottleneck": [TapPoint(model.encoder, _smp_encoder_last, "encoder")],
        "decoder": [output_tap(model.decoder, "decoder")],
    }


def tap_modules(model: nn.Module) -> dict[str, list[TapPoint]]:
    """Where each site of ``model`` is read.

    A registered architecture (:data:`~kdseg.models.registry.ARCHS`) answers with its ``taps``
    function; otherwise torchvision-style models (FCN / DeepLabV3) and smp models (anything with
    ``encoder`` and ``decoder``) are recognised by their attributes. Any other model supports only
    ``logits``.
    """
    model = unwrap(model)
    arch = arch_of(model)
    sites = ARCHS.options[arch]["taps"](model) if arch else (torchvision_taps(model) or _smp_taps(model))
    return {**(sites or {}), "logits": [output_tap(model, "(model output)")]}


def _check_sites(sites: Iterable[str]) -> list[str]:
    sites = list(sites)
    unknown = [s for s in sites if s not in SITES]
    if unknown:
        raise ValueError(f"unknown feature site(s) {unknown}; known: {', '.join(SITES)}")
    return list(dict.fromkeys(sites))


class FeatureTaps:
    """Capture the tensors at ``sites`` on every forward of ``model``.

    ``features[site]`` is a list of tensors (see the module docstring for what each site holds).
    A fresh ``features`` dict is made at the start of each forward of ``model``, so read it after
    the forward; a dict taken earlier keeps the previous step's tensors. Tensors keep their
    autograd graph. Use as a context manager or call :meth:`close` to remove the hooks.
    """

    def __init__(self, model: nn.Module, sites: Sequence[str]):
        self.sites: list[str] = _check_sites(sites)
        self.model = unwrap(model)
        self.features: dict[str, list[torch.Tensor]] = {s: [] for s in self.sites}
        self._handles: list[RemovableHandle] = []
        if not self.sites:
            return
        points = tap_modules(self.model)
        missing = [s for s in self.sites if s not in points]
        if missing:
            raise ValueError(
                f"{type(self.model).__name__} has no known location for feature site(s) {missing}; "
                f"supported: smp models, {', '.join(ARCHS.names())} (any model supports 'logits')"
            )
        self._handles.append(self.model.register_forward_pre_hook(self._reset))
        for site in self.sites:
            for point in points[site]:
                self._handles.append(point.module.register_forward_hook(self._hook(site, point.extract)))

    def _reset(self, module: nn.Module, inputs: Any) -> None:
        self.features = {s: [] for s in self.sites}

    def _hook(self, site: str, extract: Extract):
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self.features[site].extend(extract(inputs, output))

        return hook

    def close(self) -> None:
        """Remove every hook (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "active" if self.active else "closed"
        return f"FeatureTaps({type(self.model).__name__}, sites={self.sites}, {state})"


def _input_channels(model: nn.Module) -> int:
    for name in ("in_channels", "_in_channels"):
        for obj in (model, getattr(model, "encoder", None)):
            value = getattr(obj, name, None)
            if isinstance(value, int):
                return value
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def feature_shapes(
    model: nn.Module, sites: Sequence[str], input_size: tuple[int, int] = (64, 64)
) -> dict[str, list[tuple[int, int, int]]]:
    """``{site: [(C, H, W), ...]}`` for an input of ``input_size``, from one no-grad eval forward.

    The training/eval mode of every submodule is restored afterwards. Other ``FeatureTaps`` on the
    same model see this dry run as a forward (their ``features`` are replaced).
    """
    model = unwrap(model)
    modes = [(m, m.training) for m in model.modules()]
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = torch.zeros(1, _input_channels(model), *input_size, device=device, dtype=dtype)
    model.eval()
    try:
        with FeatureTaps(model, sites) as taps, torch.no_grad():
            model(x)
            return {s: [tuple(t.shape[1:]) for t in taps.features[s]] for s in taps.sites}
    finally:
        for m, mode in modes:
            m.training = mode
