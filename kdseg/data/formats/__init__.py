"""Built-in dataset formats; importing this package registers them by name."""

from kdseg.data.formats import camvid, carla, pending, synthetic  # noqa: F401
