"""Procedurally generated road scenes in the carla layout, generated on first use."""

from __future__ import annotations

from kdseg.config import DataConfig
from kdseg.data.folders import Layout
from kdseg.data.formats.carla import CARLA_CLASSES, CARLA_PALETTE, carla_layout, read_red_channel
from kdseg.data.registry import register
from kdseg.data.synth import ensure_synth, synth_cache_dir


@register("synthetic", classes=CARLA_CLASSES, palette=CARLA_PALETTE, reader=read_red_channel)
def synthetic(cfg: DataConfig) -> Layout:
    s = cfg.synth
    root = cfg.root.expanduser().resolve() if cfg.root is not None else synth_cache_dir(s.n, s.size, s.seed)
    ensure_synth(root, s.n, tuple(s.size), s.seed)
    return carla_layout(root, cfg, name="synthetic")
