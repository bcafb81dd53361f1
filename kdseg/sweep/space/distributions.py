"""The searched domains of a space file, one small class per kind (like Optuna's distributions).

A space entry ``{uniform: [0.3, 0.9]}`` becomes ``Uniform(low=0.3, high=0.9)``. Each class owns what
its kind means: checking its arguments (:meth:`from_args`), mapping values to the parameters Ray Tune
and Optuna see and back (:meth:`encode` / :meth:`decode`), a deterministic default (:meth:`midpoint`),
its Ray Tune domain (:meth:`to_tune`) and its space-file form (:meth:`to_yaml`). A new kind is one class
here plus its entry in :data:`DOMAIN_CLASSES`; nothing else switches on the kind.

Torch-free; Ray is imported only by :meth:`to_tune`.
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

GROUP_LABEL = "label"  # the key of a grouped option that names it


class _Domain(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categorical: ClassVar[bool] = False
    log: ClassVar[bool] = False  # plotted on a log axis

    def encode(self, value: Any) -> Any:
        """A decoded value -> the parameter value Tune/Optuna uses."""
        return value

    def decode(self, param: Any) -> Any:  # pragma: no cover - every kind defines it
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        try:
            self.decode(value)
        except ValueError:
            return False
        return True

    def midpoint(self) -> Any:  # pragma: no cover - every kind defines it
        raise NotImplementedError

    def to_tune(self, labels: list[Any] | None = None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def to_yaml(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


# ------------------------------------------------------------------------------------------ numeric


class _Range(_Domain):
    low: int | float
    high: int | float

    group: ClassVar[bool] = False  # only categorical domains group several keys
    n_args: ClassVar[int] = 2
    form: ClassVar[str] = "[low, high]"

    @classmethod
    def from_args(cls, args: Any, where: str) -> _Range:
        """Checks a space file's ``[low, high(, q)]``; ValueError names what is wrong."""
        if not isinstance(args, list) or len(args) != cls.n_args or not all(_is_number(a) for a in args):
            raise ValueError(f"{where}: expected {cls.form} with finite numbers, got {args!r}")
        low, high = args[0], args[1]
        if low > high:
            raise ValueError(f"{where}: low {low} is greater than high {high}")
        cls._check(args, where)
        return cls(**cls._fields(args))

    @classmethod
    def _check(cls, args: list[Any], where: str) -> None:
        pass

    @classmethod
    def _fields(cls, args: list[Any]) -> dict[str, Any]:
        return {"low": float(args[0]), "high": float(args[1])}

    def decode(self, param: Any) -> Any:
        if isinstance(param, bool) or not isinstance(param, (int, float)):
            raise ValueError(f"expected a number, got {param!r}")
        tol = 1e-9 * max(1.0, abs(self.high))
        if not (self.low - tol <= param <= self.high + tol):
            raise ValueError(f"{param!r} is outside [{self.low}, {self.high}]")
        return param

    def to_yaml(self) -> dict[str, Any]:
        return {self.kind: [self.low, self.high]}  # type: ignore[attr-defined]


class Uniform(_Range):
    kind: Literal["uniform"] = "uniform"

    def midpoint(self) -> float:
        return (self.low + self.high) / 2

    def to_tune(self, labels: list[Any] | None = None) -> Any:
        from ray import tune

        return tune.uniform(self.low, self.high)


class LogUniform(_Range):
    kind: Literal["loguniform"] = "loguniform"
    log: ClassVar[bool] = True

    @classmethod
    def _check(cls, args: list[Any], where: str) -> None:
        if args[0] <= 0:
            raise ValueError(f"{where}: loguniform needs 0 < low <= high, got low {args[0]}")

    def midpoint(self) -> float:
        return math.sqrt(self.low * self.high)

    def to_tune(self, labels: list[Any] | None = None) -> Any:
        from ray import tune

        return tune.loguniform(self.low, self.high)


class QUniform(_Range):
    kind: Literal["quniform"] = "quniform"
    q: int | float

    n_args: ClassVar[int] = 3
    form: ClassVar[str] = "[low, high, q]"

    @classmethod
    def _check(cls, args: list[Any], where: str) -> None:
        low, high, q = args
        if q <= 0:
            raise ValueError(f"{where}: q must be > 0, got {q}")
        for name, b in (("low", low), ("high", high)):
            if not math.isclose(b / q, round(b / q), abs_tol=1e-9):
                raise ValueError(f"{where}: {name} {b} is not a multiple of q {q} (Ray Tune requires it)")

    @classmethod
    def _fields(cls, args: list[Any]) -> dict[str, Any]:
        return {"low": float(args[0]), "high": float(args[1]), "q": float(args[2])}

    def contains(self, value: Any) -> bool:
        try:
            decoded = self.decode(value)
        except ValueError:
            return False
        k = (decoded - self.low) / self.q
        return math.isclose(k, round(k), abs_tol=1e-9)

    def midpoint(self) -> float:
        steps = round((self.high - self.low) / self.q / 2)
        return _round_q(self.low + steps * self.q, self.q)

    def to_tune(self, labels: list[Any] | None = None) -> Any:
        from ray import tune

        return tune.quniform(self.low, self.high, self.q)

    def to_yaml(self) -> dict[str, Any]:
        return {"quniform": [self.low, self.high, self.q]}


class RandInt(_Range):
    """Integers from ``low`` to ``high``, both inclusive."""

    kind: Literal["randint"] = "randint"

    @classmethod
    def _check(cls, args: list[Any], where: str) -> None:
        if not all(isinstance(a, int) for a in args):
            raise ValueError(f"{where}: randint bounds must be integers (both inclusive), got {args!r}")

    @classmethod
    def _fields(cls, args: list[Any]) -> dict[str, Any]:
        return {"low": args[0], "high": args[1]}

    def decode(self, param: Any) -> int:
        value = super().decode(param)
        if float(value) != int(value):
            raise ValueError(f"expected an integer, got {param!r}")
        return int(value)

    def midpoint(self) -> int:
        return (int(self.low) + int(self.high)) // 2

    def to_tune(self, labels: list[Any] | None = None) -> Any:
        from ray import tune

        return tune.randint(int(self.low), int(self.high) + 1)  # Ray's upper bound is exclusive


# -------------------------------------------------------------------------------------- categorical


class _Categorical(_Domain):
    """``values`` are the decoded values (for a group: mappings of dotted config keys); ``labels`` are
    what Ray Tune and Optuna see (primitives; equal to ``values`` when those are primitives already)."""

    values: list[Any] = []
    labels: list[Any] = []
    group: bool = False

    categorical: ClassVar[bool] = True

    def encode(self, value: Any) -> Any:
        for v, label in zip(self.values, self.labels, strict=True):
            if same_value(v, value):
                return label
        raise ValueError(f"{value!r} is not one of the {self.kind} values")  # type: ignore[attr-defined]

    def decode(self, param: Any) -> Any:
        for v, label in zip(self.values, self.labels, strict=True):
            if same_value(label, param):
                return copy.deepcopy(v)
        for v in self.values:
            if same_value(v, param):
                return copy.deepcopy(v)
        raise ValueError(f"{param!r} is not one of {self.labels}")

    def midpoint(self) -> Any:
        return self.labels[0]

    def to_tune(self, labels: list[Any] | None = None) -> Any:
        """A categorical over ``labels`` (default: all of them; the caller leaves controls out)."""
        from ray import tune

        return tune.choice(list(self.labels if labels is None else labels))

    def to_yaml(self) -> dict[str, Any]:
        kind = self.kind  # type: ignore[attr-defined]
        if self.group:
            return {kind: [{**v, GROUP_LABEL: lab} for v, lab in zip(self.values, self.labels, strict=True)]}
        return {kind: copy.deepcopy(self.values)}


class Choice(_Categorical):
    """One of the values, sampled by the searcher."""

    kind: Literal["choice"] = "choice"


class Grid(_Categorical):
    """Every value is run (all combinations of the grid keys), before the searcher samples."""

    kind: Literal["grid"] = "grid"


DOMAIN_CLASSES: dict[str, type[_Domain]] = {
    c.model_fields["kind"].default: c for c in (Uniform, LogUniform, QUniform, RandInt, Choice, Grid)
}
DOMAIN_KINDS: tuple[str, ...] = tuple(DOMAIN_CLASSES)
NUMERIC_KINDS = tuple(k for k, c in DOMAIN_CLASSES.items() if issubclass(c, _Range))
CATEGORICAL_KINDS = tuple(k for k, c in DOMAIN_CLASSES.items() if c.categorical)

Domain = Annotated[Uniform | LogUniform | QUniform | RandInt | Choice | Grid, Field(discriminator="kind")]
"""Any searched domain (pydantic picks the class from ``kind``)."""

RangeDomain = _Range
CategoricalDomain = _Categorical


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _round_q(x: float, q: float) -> float:
    return round(round(x / q) * q, 12)


def same_value(a: Any, b: Any) -> bool:
    """Equality for config values: True is not 1, a tuple equals the list of its items."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, tuple):
        a = list(a)
    if isinstance(b, tuple):
        b = list(b)
    return a == b
