"""``build_model``: one :class:`~kdseg.config.ModelConfig` in, a plain ``nn.Module`` out.

Every model's ``forward(x)`` returns logits ``[B, num_classes, H, W]`` at the input size.

- an ``arch`` registered in :data:`~kdseg.models.registry.ARCHS` (``lightweight_unet``,
  ``fcn_resnet50``): its builder.
- any other ``arch``: ``segmentation_models_pytorch.create_model(arch, encoder_name=encoder, ...)``.

``weights``: ``None`` (random init), ``"imagenet"`` (downloaded by smp / torchvision, or read from
their caches) or a local file holding the *encoder's* state dict. ``checkpoint``: a full model
state dict loaded after building (see :func:`kdseg.models.pretrained.load_model_checkpoint`).
``frozen`` is not applied here: the training loop decides on eval mode and gradients.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from kdseg.config import ModelConfig
from kdseg.errors import CheckpointError, ConfigError, WeightsError
from kdseg.models.pretrained import (
    download_error_message,
    is_download_error,
    load_encoder_weights,
    load_model_checkpoint,
)
from kdseg.models.registry import ARCHS, arch_of, own_archs

__all__ = ["build_model", "count_params", "encoder_of"]


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (trainable or not, shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())


def encoder_of(model: nn.Module) -> nn.Module:
    """The module that encoder weights files are loaded into (a registered arch's ``encoder`` option)."""
    arch = arch_of(model)
    attr = ARCHS.options[arch].get("encoder", "encoder") if arch else "encoder"
    encoder = getattr(model, attr, None)
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"{type(model).__name__} has no encoder")
    return encoder


def _label(cfg: ModelConfig) -> str:
    if cfg.arch in own_archs():
        return f"{cfg.arch} encoder"
    return f"{cfg.arch}/{cfg.encoder} encoder"


def _key(role: str | None, field: str) -> str:
    return f"{role}.{field}" if role in ("teacher", "student") else field


def _build_smp(cfg: ModelConfig, num_classes: int, role: str | None) -> nn.Module:
    from kdseg.models.smp_import import import_smp

    smp = import_smp()  # lazy: seconds (torch, timm)

    download = cfg.weights == "imagenet"
    try:
        return smp.create_model(
            cfg.arch,
            encoder_name=cfg.encoder,
            # timm-universal ("tu-") encoders take True: the pretrained tag is part of their name
            encoder_weights=(True if cfg.encoder.startswith("tu-") else "imagenet") if download else None,
            classes=num_classes,
        )
    except KeyError as e:
        msg = str(e.args[0]) if e.args else str(e)
        if download and "pretrained weights" in msg:
            raise WeightsError(f"{_key(role, 'weights')}: {msg}; use a local file or null") from None
        raise ConfigError(f"{_key(role, 'arch')}/{_key(role, 'encoder')}: {msg}") from None
    except Exception as e:
        if download and is_download_error(e):
            raise WeightsError(download_error_message(cfg.encoder, e, _key(role, "weights"))) from None
        raise


def _build_own(cfg: ModelConfig, num_classes: int, role: str | None) -> nn.Module:
    build, opts = ARCHS.lookup(cfg.arch), ARCHS.options[cfg.arch]
    download = cfg.weights == "imagenet"
    if download and not opts.get("imagenet", True):
        raise WeightsError(
            f"{_key(role, 'weights')}: {cfg.arch} has no pretrained 'imagenet' weights; "
            "use null or a local encoder weights file"
        )
    try:
        return build(cfg, num_classes)
    except Exception as e:
        if download and is_download_error(e):
            label = opts.get("weights_label", cfg.arch)
            raise WeightsError(download_error_message(label, e, _key(role, "weights"))) from None
        raise


def build_model(cfg: ModelConfig, num_classes: int, role: str | None = None) -> nn.Module:
    """Build the network described by ``cfg`` with ``num_classes`` output channels.

    Args:
        cfg: architecture, encoder, weights, checkpoint and width.
        num_classes: logits channels.
        role: ``"teacher"``, ``"student"`` or ``"model"``/``None``. It picks the state dict inside
            a checkpoint dict that holds several (``{"student": ..., "teacher": ...}``; a raw
            state dict or a ``{"model": ...}`` dict fits any role) and prefixes error messages
            with the config key (``teacher.weights: ...``).

    Raises:
        WeightsError: pretrained weights could not be downloaded, or the local weights file is
            missing, unreadable or does not fit the encoder.
        CheckpointError: the checkpoint is missing, truncated, corrupt or does not fit.
    """
    if cfg.arch in own_archs():
        model = _build_own(cfg, num_classes, role)
    else:
        model = _build_smp(cfg, num_classes, role)

    if cfg.weights not in (None, "imagenet"):
        path = Path(cfg.weights)
        if not path.is_file():
            raise WeightsError(
                f"{_key(role, 'weights')}: {path}: file not found "
                "(weights must be null, 'imagenet', or a local encoder state_dict file)"
            )
        try:
            load_encoder_weights(encoder_of(model), path, label=_label(cfg))
        except WeightsError as e:
            raise WeightsError(f"{_key(role, 'weights')}: {e}") from None

    if cfg.checkpoint == "train":  # kdseg.config.TRAIN_TEACHER: filled in by a sweep's teacher stage
        raise CheckpointError(
            f"{_key(role, 'checkpoint')}: 'train' means a sweep's teacher stage trains this teacher "
            "(kdseg-sweep); outside a sweep, name a checkpoint file (a trained teacher's student.pt)"
        )
    if cfg.checkpoint is not None:
        try:
            load_model_checkpoint(model, cfg.checkpoint, role=role)
        except CheckpointError as e:
            raise CheckpointError(f"{_key(role, 'checkpoint')}: {e}") from None
    return model
