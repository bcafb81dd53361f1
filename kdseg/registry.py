"""Name -> implementation registries whose names are known without importing their (torch) modules.

A :class:`LazyRegistry` is filled by a decorator in its *home* modules, as torchdistill's
``register_*_loss`` or smp's ``MODEL_ARCHITECTURES_MAPPING``::

    @register_feature_loss("cwd", tau="cwd_temperature")
    def cwd_loss(student, teacher, tau=1.0): ...

The home modules import torch, but the config must check names without it (a bad config is refused
in well under a second). So :meth:`LazyRegistry.names` reads the decorators' literal first arguments
from the home modules' source (``ast``, no import) and adds any name registered at run time;
:meth:`LazyRegistry.lookup` (and iterating, indexing) imports the home modules on first use.
``tests/test_registries.py`` checks that the names read and the names registered agree.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class LazyRegistry(Mapping[str, Any]):
    """``{name: object}`` filled by :meth:`register` in ``homes``; ``options[name]`` holds the
    decorator's keyword arguments."""

    def __init__(self, kind: str, homes: tuple[str, ...] = (), decorator: str = "") -> None:
        self.kind = kind
        self.homes = homes  # modules that register built-in entries
        self.decorator = decorator  # the decorator's name in those modules (for names())
        self._entries: dict[str, Any] = {}
        self.options: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **options: Any) -> Callable[[F], F]:
        """Decorator: register the decorated object under ``name`` with ``options``."""

        def add(obj: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self.options[name] = dict(options)
            return obj

        return add

    def names(self) -> tuple[str, ...]:
        """Every registered name, without importing the home modules: read from their source."""
        static = [n for home in self.homes for n in _decorated_names(home, self.decorator)]
        return tuple(dict.fromkeys([*static, *self._entries]))

    def load(self) -> None:
        """Import the home modules (registering their entries)."""
        for home in self.homes:
            importlib.import_module(home)

    def lookup(self, name: str) -> Any:
        """The object registered as ``name``; a ValueError listing the known names otherwise."""
        if name not in self._entries:
            self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def __getitem__(self, name: str) -> Any:
        if name not in self._entries:
            self.load()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self.load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self.load()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self.names()


@cache
def _decorated_names(module: str, decorator: str) -> tuple[str, ...]:
    """The literal first arguments of ``@decorator("name", ...)`` in ``module``'s source, in order."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ImportError(f"registry home module {module} not found")
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        for deco in getattr(node, "decorator_list", ()):
            if not (isinstance(deco, ast.Call) and _called_name(deco.func) == decorator):
                continue
            arg = deco.args[0] if deco.args else None
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                raise ValueError(
                    f"{spec.origin}:{deco.lineno}: @{decorator} needs the name as a string literal "
                    "(it is read without importing the module)"
                )
            out.append((deco.lineno, arg.value))
    return tuple(name for _, name in sorted(out))


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def lazy_exports(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` that import ``name``'s home submodule on first use
    (PEP 562), so importing the package stays torch-free: ``__getattr__, __dir__ = lazy_exports(__name__, H)``."""
    import sys

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{home}"), name)

    def __dir__() -> list[str]:
        return sorted([*vars(sys.modules[package]), *homes])

    return __getattr__, __dir__
