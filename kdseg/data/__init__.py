"""Datasets: decode once into numpy arrays (:class:`SegData`), then wrap them in torch loaders.

- :func:`load_data` reads a dataset folder (``carla``, ``camvid``, ``cityscapes``, ``bdd100k``,
  ``synthetic``; formats are registered by name in :mod:`kdseg.data.registry`) into a picklable
  :class:`SegData`, counting the training pixels per class on the way (:mod:`kdseg.data.weights`
  turns them into class weights).
- :func:`load_split` decodes one split alone (``train``, ``val`` or ``test``) for ``kdseg eval``.
- :func:`make_loaders` builds train/val ``DataLoader``\\ s with albumentations pipelines
  (:func:`build_transforms`).
- :func:`write_synth` renders procedural road scenes in the carla layout.
"""

from kdseg.data.class_weights import class_weights_for, compute_class_weights
from kdseg.data.classes import classes_for
from kdseg.data.formats.bdd100k import BDD100K_CLASSES, BDD100K_PALETTE
from kdseg.data.formats.camvid import CAMVID_CLASSES, CAMVID_PALETTE
from kdseg.data.formats.carla import CARLA_CLASSES, CARLA_PALETTE
from kdseg.data.formats.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from kdseg.data.load import load_data, load_split
from kdseg.data.registry import available_formats, format_info, register
from kdseg.data.synth import synth_cache_dir, write_synth
from kdseg.data.types import HeldOutSplit, SegData, Split


def __getattr__(name: str):
    # torch and albumentations are heavy: import them only when loaders are asked for.
    if name in ("make_loaders", "make_eval_loader", "SegDataset", "seed_worker"):
        from kdseg.data import loaders

        return getattr(loaders, name)
    if name == "build_transforms":
        from kdseg.data.transforms import build_transforms

        return build_transforms
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BDD100K_CLASSES",
    "BDD100K_PALETTE",
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "CARLA_CLASSES",
    "CARLA_PALETTE",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "HeldOutSplit",
    "SegData",
    "Split",
    "available_formats",
    "build_transforms",
    "classes_for",
    "class_weights_for",
    "compute_class_weights",
    "format_info",
    "load_data",
    "load_split",
    "make_eval_loader",
    "make_loaders",
    "register",
    "synth_cache_dir",
    "write_synth",
]
