"""Formats the config accepts that have no reader yet; each will become its own module."""

from __future__ import annotations

from kdseg.config import DataConfig
from kdseg.data.layout import Layout
from kdseg.data.registry import register
from kdseg.errors import DatasetError


def _not_yet(name: str):
    def fn(cfg: DataConfig) -> Layout:
        raise DatasetError(
            f"{cfg.root}: dataset format {name!r} is not implemented yet; use carla, camvid or synthetic"
        )

    return fn


for _name in ("cityscapes", "bdd100k"):
    register(_name)(_not_yet(_name))
