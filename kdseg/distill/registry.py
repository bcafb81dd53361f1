"""Name -> loss registries (as torchdistill's ``register_*_loss``): a decorator fills a mapping.

A :class:`LossRegistry` is a ``dict`` of ``name -> callable``; ``register(name, **options)`` is the
decorator that adds one. ``options`` maps the loss's keyword arguments to
:class:`~kdseg.config.DistillConfig` keys (``register("dist", beta="dist_beta")``), so the objective
passes ``beta=cfg.dist_beta`` without a second table. The config's ``Literal`` of loss names is built
from the registry (``kdseg.config``), so a registered loss is selectable and searchable at once.
No torch import here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class LossRegistry(dict[str, Callable[..., Any]]):
    """``{name: loss}`` in registration order, plus ``options[name]``: ``{keyword: config key}``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.options: dict[str, dict[str, str]] = {}

    def register(self, name: str, **options: str) -> Callable[[F], F]:
        """Decorator: register the function under ``name``; ``options`` as in the module docstring."""

        def add(fn: F) -> F:
            if name in self:
                raise ValueError(f"{self.kind} loss {name!r} is registered twice")
            self[name] = fn
            self.options[name] = dict(options)
            return fn

        return add

    def get_loss(self, name: str) -> Callable[..., Any]:
        """The loss registered as ``name``; a ValueError listing the known names otherwise."""
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} loss {name!r}; known: {', '.join(self)}") from None

    def config_kwargs(self, name: str, cfg: Any) -> dict[str, Any]:
        """The keyword arguments of loss ``name`` read from ``cfg`` (a DistillConfig)."""
        self.get_loss(name)
        return {kw: getattr(cfg, key) for kw, key in self.options[name].items()}
