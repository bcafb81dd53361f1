"""Built-in dataset formats; importing this package registers them by name."""

from kdseg.data.formats import bdd100k, camvid, carla, cityscapes, synthetic  # noqa: F401
