"""Command line: the only place that parses arguments. Entry points ``kdseg`` and ``kdseg-sweep``."""

from kdseg.cli.app import main, sweep_main

__all__ = ["main", "sweep_main"]
