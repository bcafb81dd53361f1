"""Colours of the road scene: one table of pickers, one :func:`pick_color` that draws from it.

Every kind of surface draws its colour from overlapping options (fixed colours, grey ranges, HSV ranges),
so that no class is identifiable from its colour alone. :data:`PICKERS` is that table; the draws it
makes from ``rng`` (their kind and order) are part of what a seed generates, so the table keeps them.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Color = tuple[float, float, float]
Range = tuple[float, float]
Option = Color | Callable[[np.random.Generator], Color]


def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (r * 255, g * 255, b * 255)


def _jitter(rng: np.random.Generator, c: Color, amount: float = 18.0) -> Color:
    d = rng.normal(0.0, amount * 0.5, 3) + rng.normal(0.0, amount)  # per channel + brightness
    return tuple(float(np.clip(v + e, 0, 255)) for v, e in zip(c, d, strict=True))  # type: ignore[return-value]


def _grey(rng: np.random.Generator, lo: float, hi: float, tint: float = 6.0) -> Color:
    g = rng.uniform(lo, hi)
    return tuple(float(np.clip(g + rng.normal(0, tint), 0, 255)) for _ in range(3))  # type: ignore[return-value]


def _mix(a: Color, b: Color, t: float) -> Color:
    return tuple(x * (1 - t) + y * t for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def grey(lo: float, hi: float, tint: float = 6.0) -> Callable[[np.random.Generator], Color]:
    """A grey of brightness ``U(lo, hi)``, each channel tinted by ``N(0, tint)``."""
    return lambda rng: _grey(rng, lo, hi, tint)


def hsv(
    h: Range = (0.0, 1.0), s: Range = (0.0, 1.0), v: Range = (0.0, 1.0)
) -> Callable[[np.random.Generator], Color]:
    """A colour of hue, saturation and value drawn uniformly from their ranges (in that order)."""
    return lambda rng: _hsv(rng.uniform(*h), rng.uniform(*s), rng.uniform(*v))


@dataclass(frozen=True)
class Picker:
    """One kind of surface: ``options`` (one drawn uniformly; with ``first``, options[0] with that
    probability, else options[1]; a single option is taken without a draw), then jittered by
    ``jitter`` (per channel and brightness; None: not jittered)."""

    options: tuple[Option, ...]
    jitter: float | None = 18.0
    first: float | None = None


PICKERS: dict[str, Picker] = {
    "building": Picker(
        (
            grey(80, 200),
            (200, 180, 145),
            (150, 75, 55),
            (215, 210, 200),
            (70, 65, 70),
            (90, 115, 140),
            hsv(s=(0.1, 0.4), v=(0.4, 0.85)),
        )
    ),
    "wall": Picker((grey(90, 200), (185, 170, 140), (140, 80, 60), hsv(s=(0.05, 0.35), v=(0.35, 0.8)))),
    "road": Picker((grey(55, 125, 4), grey(90, 150, 4), (110, 100, 90)), jitter=10),
    "sidewalk": Picker((grey(105, 195), (180, 165, 140), (150, 105, 95), grey(80, 120))),
    "vegetation": Picker(
        (
            hsv((0.2, 0.38), (0.35, 0.8), (0.25, 0.6)),
            hsv((0.12, 0.2), (0.3, 0.6), (0.35, 0.65)),
            hsv((0.25, 0.45), (0.2, 0.5), (0.12, 0.3)),
        ),
        jitter=12,
    ),
    "other": Picker(((125, 105, 75), (235, 120, 30), grey(40, 200), hsv(s=(0.3, 0.9), v=(0.3, 0.9)))),
    "pole": Picker((grey(60, 190), (40, 70, 50), (180, 160, 60)), jitter=10),
    "fence": Picker((grey(100, 200), (130, 90, 55), (55, 100, 65), (225, 225, 220))),
    "vehicle": Picker((grey(20, 235, 4), hsv(s=(0.3, 0.95), v=(0.2, 0.95))), jitter=None, first=0.45),
    "clothing": Picker((grey(15, 220, 5), hsv(s=(0.2, 0.9), v=(0.15, 0.9))), jitter=None, first=0.4),
    "skin": Picker((hsv((0.03, 0.1), (0.25, 0.6), (0.3, 0.95)),), jitter=None),
    "window": Picker((grey(20, 70), (70, 95, 125), grey(140, 200)), jitter=None),  # lit ones: night only
    "glass": Picker((grey(15, 60), (50, 65, 85), grey(90, 150)), jitter=None),
    "sign_face": Picker(
        ((200, 30, 35), (35, 75, 180), (230, 200, 40), (235, 235, 230), (30, 130, 70)), jitter=None
    ),
    "sign_symbol": Picker(((240, 240, 240), (20, 20, 20), (200, 30, 35)), jitter=None),
}


def pick_color(rng: np.random.Generator, kind: str) -> Color:
    """A colour for a surface of ``kind`` (a key of :data:`PICKERS`)."""
    p = PICKERS[kind]
    if p.first is not None:
        option = p.options[0] if rng.random() < p.first else p.options[1]
    elif len(p.options) == 1:
        option = p.options[0]
    else:
        option = p.options[int(rng.integers(len(p.options)))]
    color = option(rng) if callable(option) else option
    return color if p.jitter is None else _jitter(rng, color, p.jitter)
