"""A procedural road-scene renderer with CARLA's 13 classes (see :mod:`kdseg.data.synth`).

The scene is a pinhole camera over a flat ground plane: a straight road towards a vanishing
point, lanes, sidewalks and terrain, roadside walls, fences, hedges and building facades with
windows, and objects standing on the ground (vehicles, pedestrians, poles with lights and
signs, trees, clutter), each projected with its depth so that far things are small and near
things occlude far ones. Colours are drawn from overlapping per-class distributions, then
hazed with distance, textured with class-dependent noise, shadowed, lit with a global cast and
blurred, so that no class is identifiable from its colour alone.

Everything is drawn into an RGB image and a label mask with the same polygons, at twice the
output resolution, then the image is area-downsampled and the mask nearest-downsampled.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

(
    NONE,
    BUILDINGS,
    FENCES,
    OTHER,
    PEDESTRIANS,
    POLES,
    ROADLINES,
    ROADS,
    SIDEWALKS,
    VEGETATION,
    VEHICLES,
    WALLS,
    SIGNS,
) = range(13)
NUM_CLASSES = 13

Z_NEAR, Z_FAR = 0.6, 400.0

# Multiplicative texture strength per class: (low-frequency blotches, fine grain).
TEXTURE = np.array(
    [
        (0.04, 0.01),  # none/sky
        (0.10, 0.06),  # buildings
        (0.06, 0.05),  # fences
        (0.14, 0.08),  # other
        (0.05, 0.04),  # pedestrians
        (0.05, 0.03),  # poles
        (0.08, 0.08),  # road lines
        (0.12, 0.09),  # roads
        (0.10, 0.08),  # sidewalks
        (0.22, 0.16),  # vegetation
        (0.04, 0.03),  # vehicles
        (0.12, 0.08),  # walls
        (0.03, 0.02),  # traffic signs
    ],
    dtype=np.float32,
)

Color = tuple[float, float, float]


# ------------------------------------------------------------------------------------- helpers


def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (r * 255, g * 255, b * 255)


def _jitter(rng: np.random.Generator, c: Color, amount: float = 18.0) -> Color:
    d = rng.normal(0.0, amount * 0.5, 3) + rng.normal(0.0, amount)  # per channel + brightness
    return tuple(float(np.clip(v + e, 0, 255)) for v, e in zip(c, d, strict=True))  # type: ignore[return-value]


def _grey(rng: np.random.Generator, lo: float, hi: float, tint: float = 6.0) -> Color:
    g = rng.uniform(lo, hi)
    return tuple(float(np.clip(g + rng.normal(0, tint), 0, 255)) for _ in range(3))  # type: ignore[return-value]


def _pick(rng: np.random.Generator, options: list[Callable[[], Color]]) -> Color:
    return options[int(rng.integers(len(options)))]()


def _mix(a: Color, b: Color, t: float) -> Color:
    return tuple(x * (1 - t) + y * t for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def building_color(rng: np.random.Generator) -> Color:
    return _jitter(
        rng,
        _pick(
            rng,
            [
                lambda: _grey(rng, 80, 200),
                lambda: (200, 180, 145),
                lambda: (150, 75, 55),
                lambda: (215, 210, 200),
                lambda: (70, 65, 70),
                lambda: (90, 115, 140),
                lambda: _hsv(rng.uniform(), rng.uniform(0.1, 0.4), rng.uniform(0.4, 0.85)),
            ],
        ),
    )


def wall_color(rng: np.random.Generator) -> Color:
    return _jitter(
        rng,
        _pick(
            rng,
            [
                lambda: _grey(rng, 90, 200),
                lambda: (185, 170, 140),
                lambda: (140, 80, 60),
                lambda: _hsv(rng.uniform(), rng.uniform(0.05, 0.35), rng.uniform(0.35, 0.8)),
            ],
        ),
    )


def road_color(rng: np.random.Generator) -> Color:
    return _jitter(
        rng,
        _pick(
            rng,
            [
                lambda: _grey(rng, 55, 125, 4),
                lambda: _grey(rng, 90, 150, 4),
                lambda: (110, 100, 90),
            ],
        ),
        10,
    )


def sidewalk_color(rng: np.random.Generator) -> Color:
    return _jitter(
        rng,
        _pick(
            rng,
            [
                lambda: _grey(rng, 105, 195),
                lambda: (180, 165, 140),
                lambda: (150, 105, 95),
                lambda: _grey(rng, 80, 120),
            ],
        ),
    )


def vegetation_color(rng: np.random.Generator) -> Color:
    return _jitter(
        rng,
        _pick(
            rng,
            [
                lambda: _hsv(rng.uniform(0.2, 0.38), rng.uniform(0.35, 0.8), rng.uniform(0.25, 0.6)),
                lambda: _hsv(rng.uniform(0.12, 0.2), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.65)),
                lambda: _hsv(rng.uniform(0.25, 0.45), rng.uniform(0.2, 0.5), rng.uniform(0.12, 0.3)),
            ],
        ),
        12,
    )


def other_color(rng: np.random.Generator) -> Color:
    return _jitter(
        rng,
        _pick(
            rng,
            [
                lambda: (125, 105, 75),
                lambda: (235, 120, 30),
                lambda: _grey(rng, 40, 200),
                lambda: _hsv(rng.uniform(), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9)),
            ],
        ),
    )


def pole_color(rng: np.random.Generator) -> Color:
    return _jitter(
        rng,
        _pick(rng, [lambda: _grey(rng, 60, 190), lambda: (40, 70, 50), lambda: (180, 160, 60)]),
        10,
    )


def fence_color(rng: np.random.Generator) -> Color:
    return _jitter(
        rng,
        _pick(
            rng,
            [
                lambda: _grey(rng, 100, 200),
                lambda: (130, 90, 55),
                lambda: (55, 100, 65),
                lambda: (225, 225, 220),
            ],
        ),
    )


def vehicle_color(rng: np.random.Generator) -> Color:
    if rng.random() < 0.45:
        return _grey(rng, 20, 235, 4)
    return _hsv(rng.uniform(), rng.uniform(0.3, 0.95), rng.uniform(0.2, 0.95))


def clothing_color(rng: np.random.Generator) -> Color:
    if rng.random() < 0.4:
        return _grey(rng, 15, 220, 5)
    return _hsv(rng.uniform(), rng.uniform(0.2, 0.9), rng.uniform(0.15, 0.9))


def skin_color(rng: np.random.Generator) -> Color:
    return _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.3, 0.95))


# ------------------------------------------------------------------------------------- drawing


@dataclass
class Camera:
    f: float  # focal length in pixels
    hc: float  # camera height above the ground (m)
    xv: float  # vanishing point column
    yh: float  # horizon row

    def project(self, X, Y, Z) -> np.ndarray:
        """Screen points ``[..., 2]`` of world points (X right, Y up, Z forward; metres)."""
        Z = np.maximum(np.asarray(Z, float), Z_NEAR)
        x = self.xv + self.f * np.asarray(X, float) / Z
        y = self.yh + self.f * (self.hc - np.asarray(Y, float)) / Z
        x, y = np.broadcast_arrays(x, y)
        return np.stack([x, y], axis=-1)

    def scale(self, Z: float) -> float:
        """Pixels per metre at depth Z."""
        return self.f / max(Z, Z_NEAR)


@dataclass
class Style:
    sky_top: Color
    sky_horizon: Color
    haze: Color
    fog: float  # metres at which 63% of the colour is haze
    brightness: float
    cast: Color
    night: bool


class Canvas:
    """An RGB float image and a label mask, always drawn with the same polygons."""

    def __init__(self, h: int, w: int, cam: Camera, style: Style) -> None:
        self.h, self.w = h, w
        self.cam, self.style = cam, style
        self.img = np.zeros((h, w, 3), np.float32)
        self.mask = np.zeros((h, w), np.uint8)

    def haze(self, color: Color, Z: float) -> Color:
        t = 1.0 - np.exp(-max(Z, 0.0) / self.style.fog)
        return _mix(color, self.style.haze, float(t))

    def polys(self, polys, cls: int, color: Color, Z: float | None = None) -> None:
        """Fill polygons (a list of ``[k, 2]`` arrays or one ``[n, k, 2]`` array) in one colour."""
        if len(polys) == 0:
            return
        if Z is not None:
            color = self.haze(color, Z)
        if isinstance(polys, np.ndarray):
            pts = list(np.round(polys * 16).clip(-(2**26), 2**26).astype(np.int32))
        else:
            pts = [np.round(np.asarray(p) * 16).clip(-(2**26), 2**26).astype(np.int32) for p in polys]
        cv2.fillPoly(self.img, pts, color=tuple(float(c) for c in color), lineType=cv2.LINE_8, shift=4)
        cv2.fillPoly(self.mask, pts, color=int(cls), lineType=cv2.LINE_8, shift=4)

    def ellipse(self, center, axes, cls: int, color: Color, Z: float | None = None) -> None:
        if Z is not None:
            color = self.haze(color, Z)
        c = (int(round(center[0] * 16)), int(round(center[1] * 16)))
        a = (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16))))
        if abs(c[0]) > 2**26 or abs(c[1]) > 2**26:
            return
        col = tuple(float(v) for v in color)
        cv2.ellipse(self.img, c, a, 0, 0, 360, col, -1, cv2.LINE_8, 4)
        cv2.ellipse(self.mask, c, a, 0, 0, 360, int(cls), -1, cv2.LINE_8, 4)

    # world-space shapes -------------------------------------------------------------------

    def ground_quad(self, x0, x1, z0, z1) -> np.ndarray:
        """Rectangle(s) on the ground; array arguments give ``[n, 4, 2]``."""
        x0, x1, z0, z1 = np.broadcast_arrays(*(np.asarray(v, float) for v in (x0, x1, z0, z1)))
        X = np.stack([x0, x1, x1, x0], -1)
        Z = np.stack([z0, z0, z1, z1], -1)
        return self.cam.project(X, 0.0, Z)

    def side_quad(self, X, z0, z1, y0, y1) -> np.ndarray:
        """Rectangle(s) in the plane ``x = X`` (parallel to the road)."""
        z0, z1, y0, y1 = np.broadcast_arrays(*(np.asarray(v, float) for v in (z0, z1, y0, y1)))
        Z = np.stack([z0, z1, z1, z0], -1)
        Y = np.stack([y0, y0, y1, y1], -1)
        return self.cam.project(X, Y, Z)

    def front_quad(self, x0, x1, y0, y1, Z) -> np.ndarray:
        """Rectangle(s) facing the camera at depth Z."""
        x0, x1, y0, y1 = np.broadcast_arrays(*(np.asarray(v, float) for v in (x0, x1, y0, y1)))
        X = np.stack([x0, x1, x1, x0], -1)
        Y = np.stack([y0, y0, y1, y1], -1)
        return self.cam.project(X, Y, Z)


# ------------------------------------------------------------------------------------- the scene


@dataclass
class Side:
    sign: int  # -1 left, +1 right
    road_edge: float  # |X| of the road edge
    walk: float  # sidewalk width (0: none)
    terrain: int  # class of the ground beyond the sidewalk
    terrain_color: Color

    @property
    def edge(self) -> float:
        return self.road_edge + self.walk


def _style(rng: np.random.Generator) -> Style:
    kind = rng.choice(["clear", "overcast", "dusk", "fog", "night"], p=[0.4, 0.25, 0.15, 0.1, 0.1])
    if kind == "clear":
        top = _jitter(rng, (70, 130, 215), 15)
        hor = _jitter(rng, (175, 205, 235), 12)
        fog, bright, cast = rng.uniform(250, 900), rng.uniform(0.85, 1.2), (1.0, 1.0, 1.0)
    elif kind == "overcast":
        top = _grey(rng, 150, 210)
        hor = _grey(rng, 180, 230)
        fog, bright, cast = rng.uniform(150, 450), rng.uniform(0.7, 1.0), (0.95, 0.98, 1.05)
    elif kind == "dusk":
        top = _jitter(rng, (90, 80, 140), 15)
        hor = _jitter(rng, (240, 160, 110), 15)
        fog, bright, cast = rng.uniform(200, 600), rng.uniform(0.55, 0.85), (1.12, 0.95, 0.8)
    elif kind == "fog":
        top = _grey(rng, 170, 215, 3)
        hor = _grey(rng, 185, 225, 3)
        fog, bright, cast = rng.uniform(35, 100), rng.uniform(0.8, 1.05), (1.0, 1.0, 1.0)
    else:
        top = _jitter(rng, (10, 15, 35), 5)
        hor = _jitter(rng, (45, 45, 70), 8)
        fog, bright, cast = rng.uniform(80, 250), rng.uniform(0.4, 0.6), (0.9, 0.95, 1.15)
    cast = tuple(c * rng.uniform(0.93, 1.07) for c in cast)
    return Style(top, hor, hor, float(fog), float(bright), cast, kind == "night")  # type: ignore[arg-type]


def render_scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One scene: RGB uint8 ``[H, W, 3]`` and class ids uint8 ``[H, W]`` (13 CARLA classes)."""
    H, W = size
    k = 2 if max(H, W) <= 512 else 1
    h, w = H * k, W * k
    cam = Camera(
        f=w * rng.uniform(0.55, 0.9),
        hc=rng.uniform(1.3, 2.2),
        xv=w * (0.5 + rng.uniform(-0.18, 0.18)),
        yh=h * rng.uniform(0.34, 0.54),
    )
    style = _style(rng)
    cv = Canvas(h, w, cam, style)

    _sky(cv, rng)
    _skyline(cv, rng)

    # Road: lanes around the camera's lane, sidewalks and terrain on each side.
    lane_w = rng.uniform(2.8, 3.8)
    n_lanes = int(rng.integers(2, 5))
    ego = int(rng.integers(0, n_lanes))
    off = rng.uniform(-0.5, 0.5)
    bounds = [(j - ego - 0.5) * lane_w - off for j in range(n_lanes + 1)]
    sides = []
    for sign, edge in ((-1, -bounds[0]), (1, bounds[-1])):
        walk = rng.uniform(1.5, 5.0) if rng.random() < 0.9 else 0.0
        terrain = int(rng.choice([VEGETATION, OTHER, SIDEWALKS, VEGETATION]))
        tcol = {VEGETATION: vegetation_color, OTHER: other_color, SIDEWALKS: sidewalk_color}[terrain](rng)
        sides.append(Side(sign, edge, walk, terrain, tcol))
    z_end = rng.uniform(45, 160) if rng.random() < 0.3 else None
    _ground(cv, rng, sides, bounds, z_end)
    _ground_haze(cv)
    _road_lines(cv, rng, bounds, z_end)

    # Roadside backdrop: far from the road first (nearer planes occlude farther ones).
    backdrop: list[tuple[float, Callable[[], None]]] = []
    objects: list[tuple[float, Callable[[], None]]] = []
    if z_end is not None:
        backdrop.append((1e9, lambda: _end_facade(cv, rng, z_end)))
    z_max = z_end if z_end is not None else 250.0
    for side in sides:
        _plan_side(cv, rng, side, z_max, backdrop, objects)
    _plan_traffic(cv, rng, bounds, sides, z_max, objects)
    for _, draw in sorted(backdrop, key=lambda t: -t[0]):
        draw()
    for _, draw in sorted(objects, key=lambda t: -t[0]):
        draw()
    if rng.random() < 0.35:
        _hood(cv, rng)

    img = _finish(cv, rng)
    img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA) if k > 1 else img
    mask = cv2.resize(cv.mask, (W, H), interpolation=cv2.INTER_NEAREST_EXACT) if k > 1 else cv.mask
    noise = rng.normal(0.0, rng.uniform(1.5, 6.0), img.shape).astype(np.float32)
    img = np.clip(img + noise, 0, 255).round().astype(np.uint8)
    return img, mask


# ------------------------------------------------------------------------------------- layers


def _sky(cv: Canvas, rng: np.random.Generator) -> None:
    st = cv.style
    y = np.arange(cv.h, dtype=np.float32)[:, None]
    t = np.clip(y / max(cv.cam.yh, 1.0), 0, 1) ** rng.uniform(0.6, 1.6)
    top, hor = np.array(st.sky_top, np.float32), np.array(st.sky_horizon, np.float32)
    cv.img[:] = (top * (1 - t) + hor * t)[:, None, :]
    # clouds: soft bright blotches
    if not st.night and rng.random() < 0.6:
        cloud = cv2.resize(rng.random((6, 8)).astype(np.float32), (cv.w, cv.h), interpolation=cv2.INTER_CUBIC)
        amount = np.clip(cloud - rng.uniform(0.4, 0.7), 0, 1)[..., None] * rng.uniform(40, 120)
        cv.img += amount * (1 - t[..., None]) ** 0.5
    cv.mask[:] = NONE


def _skyline(cv: Canvas, rng: np.random.Generator) -> None:
    """Distant buildings or tree lines just above the horizon."""
    if rng.random() < 0.25:
        return
    Z = rng.uniform(200, 380)
    x = -cv.w * 0.1
    trees = rng.random() < 0.35
    while x < cv.w * 1.1:
        wpx = rng.uniform(0.03, 0.15) * cv.w
        hm = rng.uniform(4, 40 if not trees else 15)
        top = cv.cam.yh - cv.cam.scale(Z) * (hm - cv.cam.hc)
        base = cv.cam.yh + 2
        if trees:
            col = vegetation_color(rng)
            cv.ellipse(
                (x + wpx / 2, top + (base - top) / 2), (wpx / 1.6, (base - top) / 1.6 + 1), VEGETATION, col, Z
            )
        elif rng.random() < 0.85:
            col = building_color(rng)
            poly = np.array([[x, base], [x + wpx, base], [x + wpx, top], [x, top]])
            cv.polys([poly], BUILDINGS, col, Z)
        x += wpx * rng.uniform(0.7, 1.3)


def _ground(cv: Canvas, rng: np.random.Generator, sides: list[Side], bounds: list[float], z_end) -> None:
    z1 = z_end + 1 if z_end is not None else Z_FAR
    big = 400.0
    for s in sides:
        # terrain (with bare patches of another kind), then sidewalk, on each side
        x0, x1 = sorted((0.0, s.sign * big))
        cv.polys([cv.ground_quad(x0, x1, Z_NEAR, z1)], s.terrain, s.terrain_color)
        for _ in range(int(rng.integers(0, 4))):
            za = rng.uniform(3, 60)
            xa = s.sign * (s.edge + rng.uniform(0, 8))
            xb = xa + s.sign * rng.uniform(1, 6)
            cls = int(rng.choice([VEGETATION, OTHER]))
            col = vegetation_color(rng) if cls == VEGETATION else other_color(rng)
            cv.polys([cv.ground_quad(min(xa, xb), max(xa, xb), za, za + rng.uniform(2, 15))], cls, col)
        if s.walk > 0:
            col = sidewalk_color(rng)
            xa, xb = sorted((s.sign * s.road_edge, s.sign * s.edge))
            cv.polys([cv.ground_quad(xa, xb, Z_NEAR, z1)], SIDEWALKS, col)
            # paving joints and a curb of a slightly different tone
            joint = _mix(col, (0, 0, 0), rng.uniform(0.1, 0.35))
            step = rng.uniform(1.0, 3.0)
            zs = np.arange(rng.uniform(0, step), min(z1, 60), step)
            cv.polys(cv.ground_quad(xa, xb, zs, zs + 0.12), SIDEWALKS, joint)
            curb_in = s.sign * (s.road_edge + 0.25)
            cv.polys(
                [cv.ground_quad(*sorted((s.sign * s.road_edge, curb_in)), Z_NEAR, z1)],
                SIDEWALKS,
                _jitter(rng, col, 15),
            )
    rcol = road_color(rng)
    cv.polys([cv.ground_quad(bounds[0], bounds[-1], Z_NEAR, z1)], ROADS, rcol)
    for _ in range(int(rng.integers(0, 5))):  # repaired patches, wet spots, oil stains
        xa = rng.uniform(bounds[0], bounds[-1])
        za = rng.uniform(2, 50)
        poly = cv.ground_quad(xa, min(bounds[-1], xa + rng.uniform(0.5, 4)), za, za + rng.uniform(1, 10))
        cv.polys([poly], ROADS, _jitter(rng, rcol, 25))


def _ground_haze(cv: Canvas) -> None:
    y0 = int(np.ceil(cv.cam.yh + 0.5))
    if y0 >= cv.h:
        return
    y = np.arange(y0, cv.h, dtype=np.float32) + 0.5
    Z = cv.cam.f * cv.cam.hc / np.maximum(y - cv.cam.yh, 1e-3)
    t = (1.0 - np.exp(-Z / cv.style.fog))[:, None, None]
    cv.img[y0:] = cv.img[y0:] * (1 - t) + np.array(cv.style.haze, np.float32) * t


def _road_lines(cv: Canvas, rng: np.random.Generator, bounds: list[float], z_end) -> None:
    if rng.random() < 0.05:
        return
    z_stop = min(z_end if z_end is not None else 150.0, 150.0)
    white = _jitter(rng, (230, 230, 225), 10)
    yellow = _jitter(rng, (225, 190, 60), 10)
    road = tuple(float(v) for v in cv.img[min(cv.h - 1, int(cv.h * 0.97)), cv.w // 2])
    wear = rng.uniform(0.0, 0.45)
    white_worn, yellow_worn = _mix(white, road, wear), _mix(yellow, road, wear)
    width = rng.uniform(0.1, 0.2)
    dash, period = rng.uniform(2.0, 4.0), rng.uniform(7.0, 12.0)
    phase = rng.uniform(0, period)
    center = len(bounds) // 2 if rng.random() < 0.4 else None
    white_rects: list[tuple[float, float, float, float]] = []
    yellow_rects: list[tuple[float, float, float, float]] = []
    for j, b in enumerate(bounds[1:-1], start=1):
        if j == center:  # a double solid centre line
            yellow_rects += [(b + d - width / 2, b + d + width / 2, Z_NEAR, z_stop) for d in (-0.15, 0.15)]
        else:
            zs = np.arange(phase - period, z_stop, period)
            white_rects += [(b - width / 2, b + width / 2, z, z + dash) for z in zs if z + dash > Z_NEAR]
    if rng.random() < 0.6:  # solid edge lines
        white_rects += [
            (bounds[0] + 0.25, bounds[0] + 0.25 + width, Z_NEAR, z_stop),
            (bounds[-1] - 0.25 - width, bounds[-1] - 0.25, Z_NEAR, z_stop),
        ]
    _ground_rects(cv, white_rects, ROADLINES, white_worn)
    _ground_rects(cv, yellow_rects, ROADLINES, yellow_worn)
    if rng.random() < 0.35:  # a zebra crossing and its stop line
        zc = rng.uniform(6, 30)
        depth = rng.uniform(2.5, 4.5)
        rects = [(x, x + 0.5, zc, zc + depth) for x in np.arange(bounds[0] + 0.3, bounds[-1] - 0.3, 1.0)]
        rects.append((bounds[0], bounds[-1], zc - 1.5, zc - 1.1))
        _ground_rects(cv, rects, ROADLINES, _mix(white, road, wear * 0.5))


_DEPTH_BANDS = (Z_NEAR, 6.0, 12.0, 25.0, 50.0, 100.0, 200.0, Z_FAR)


def _ground_rects(cv: Canvas, rects, cls: int, color: Color) -> None:
    """Rectangles on the ground ``(x0, x1, z0, z1)``, hazed by depth band."""
    if not rects:
        return
    x0, x1, z0, z1 = np.asarray(rects, float).T
    for a, b in zip(_DEPTH_BANDS[:-1], _DEPTH_BANDS[1:], strict=True):
        keep = (z0 < b) & (z1 > a)
        if keep.any():
            quads = cv.ground_quad(x0[keep], x1[keep], np.maximum(z0[keep], a), np.minimum(z1[keep], b))
            cv.polys(quads, cls, color, float(np.sqrt(a * b)))


def _end_facade(cv: Canvas, rng: np.random.Generator, z_end: float) -> None:
    """Buildings (or a wall of trees) closing the road at z_end, facing the camera."""
    x = -200.0
    while x < 200.0:
        wd = rng.uniform(8, 30)
        if rng.random() < 0.8:
            hgt = rng.uniform(6, 35)
            col = building_color(rng)
            cv.polys([cv.front_quad(x, x + wd, 0, hgt, z_end)], BUILDINGS, col, z_end)
            _windows_front(cv, rng, x, x + wd, hgt, z_end)
        else:
            hgt = rng.uniform(4, 12)
            cv.polys([cv.front_quad(x, x + wd, 0, hgt, z_end)], VEGETATION, vegetation_color(rng), z_end)
        x += wd


def _windows_front(cv: Canvas, rng: np.random.Generator, x0: float, x1: float, hgt: float, Z: float) -> None:
    if cv.cam.scale(Z) * 1.2 < 1.0:
        return
    col = _window_color(cv, rng)
    ww, wh, sx, sy = rng.uniform(0.8, 1.6), rng.uniform(1.0, 1.8), rng.uniform(2.2, 4), rng.uniform(2.8, 3.6)
    xg, yg = np.meshgrid(np.arange(x0 + 0.8, x1 - ww, sx), np.arange(rng.uniform(1, 2.5), hgt - wh, sy))
    cv.polys(cv.front_quad(xg.ravel(), xg.ravel() + ww, yg.ravel(), yg.ravel() + wh, Z), BUILDINGS, col, Z)


def _window_color(cv: Canvas, rng: np.random.Generator) -> Color:
    if cv.style.night and rng.random() < 0.6:
        return _jitter(rng, (250, 220, 140), 10)
    return _pick(rng, [lambda: _grey(rng, 20, 70), lambda: (70, 95, 125), lambda: _grey(rng, 140, 200)])


def _segments(rng: np.random.Generator, z0: float, z1: float, lo: float, hi: float, gap: float):
    """Consecutive [a, b) depth ranges of random length with occasional gaps."""
    z = z0
    while z < z1:
        length = rng.uniform(lo, hi)
        yield z, min(z + length, z1)
        z += length + (rng.uniform(1, gap) if rng.random() < 0.3 else 0.0)


def _plan_side(cv: Canvas, rng: np.random.Generator, s: Side, z_max: float, backdrop, objects) -> None:
    sg = s.sign
    # buildings, furthest from the road
    if rng.random() < 0.85:
        X = sg * (s.edge + rng.uniform(0.5, 9))
        z0 = rng.uniform(0, 25)
        for a, b in _segments(rng, z0, z_max, 8, 35, 15):
            hgt = rng.uniform(5, 40)
            backdrop.append((abs(X), _facade(cv, rng, X, a, b, hgt)))
    # trees between the buildings and the road
    for z in np.arange(rng.uniform(2, 15), min(z_max, 120), rng.uniform(6, 25)):
        if rng.random() < 0.6:
            X = sg * (s.edge + rng.uniform(-0.5 if s.walk else 0.5, 5))
            target = backdrop if abs(X) > s.edge else objects
            target.append((abs(X) if target is backdrop else z, _tree(cv, rng, X, z)))
    # low structures along the sidewalk's outer edge
    for cls, p in ((WALLS, 0.6), (FENCES, 0.55), (VEGETATION, 0.25)):
        if rng.random() >= p:
            continue
        X = sg * (s.edge + rng.uniform(0.0, 1.5))
        z0 = rng.uniform(0, 20)
        for a, b in _segments(rng, z0, min(z_max, 150), 5, 40, 25):
            backdrop.append((abs(X), _low_structure(cv, rng, cls, X, a, b)))
    # poles (street lights, sign posts) and signs near the curb
    if rng.random() < 0.9:
        X = sg * (s.road_edge + rng.uniform(0.4, max(0.5, s.walk - 0.3) if s.walk else 1.2))
        step = rng.uniform(10, 35)
        for z in np.arange(rng.uniform(3, 12), min(z_max, 120), step):
            objects.append((z, _pole(cv, rng, X, z, sg)))
    # pedestrians and clutter on the sidewalk
    if s.walk > 0:
        for _ in range(int(rng.poisson(2.5))):
            X = sg * (s.road_edge + rng.uniform(0.3, s.walk))
            z = rng.uniform(3, 50)
            objects.append((z, _pedestrian(cv, rng, X, z)))
    for _ in range(int(rng.poisson(2.0))):
        X = sg * (s.road_edge + rng.uniform(0.3, s.walk + 2.0))
        z = rng.uniform(2.5, 50)
        objects.append((z, _clutter(cv, rng, X, z)))


def _plan_traffic(cv: Canvas, rng, bounds: list[float], sides: list[Side], z_max: float, objects) -> None:
    lanes = [(a + b) / 2 for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    n = int(rng.poisson(3.0)) + (1 if rng.random() < 0.6 else 0)
    for _ in range(n):
        X = lanes[int(rng.integers(len(lanes)))] + rng.normal(0, 0.3)
        z = rng.uniform(5, min(z_max - 5, 70)) if rng.random() < 0.7 else rng.uniform(4, 14)
        if abs(X) < 1.2 and z < 6:
            z += 6  # not inside the ego car
        objects.append((z, _vehicle(cv, rng, X, z)))
    for s in sides:  # parked cars along the curb
        for _ in range(int(rng.poisson(0.8))):
            X = s.sign * (s.road_edge - rng.uniform(1.0, 1.4))
            z = rng.uniform(4, 50)
            objects.append((z, _vehicle(cv, rng, X, z)))
    if rng.random() < 0.25:  # someone crossing the road
        X = rng.uniform(bounds[0], bounds[-1])
        z = rng.uniform(6, 25)
        objects.append((z, _pedestrian(cv, rng, X, z)))


# ------------------------------------------------------------------------------------- things


def _facade(cv: Canvas, rng, X: float, a: float, b: float, hgt: float):
    col = building_color(rng)
    wcol = _window_color(cv, rng)
    floors = rng.uniform(2.8, 3.6)
    ww, wh, sx = rng.uniform(0.8, 1.8), rng.uniform(1.0, 1.8), rng.uniform(2.2, 4.5)
    door = rng.random() < 0.5
    Zm = (a + b) / 2

    def draw() -> None:
        cv.polys([cv.side_quad(X, a, b, 0, hgt)], BUILDINGS, col, Zm)
        if rng.random() < 0.5:  # a cornice / ground-floor band in another tone
            cv.polys([cv.side_quad(X, a, b, 0, rng.uniform(2.5, 4))], BUILDINGS, _jitter(rng, col, 30), Zm)
        zs = np.arange(a + 0.6, b - ww, sx)
        ys = np.arange(rng.uniform(1.0, 2.5), hgt - wh, floors)
        if len(zs) and len(ys):
            zg, yg = (g.ravel() for g in np.meshgrid(zs, ys))
            cv.polys(cv.side_quad(X, zg, zg + ww, yg, yg + wh), BUILDINGS, wcol, Zm)
        if door:
            zd = rng.uniform(a, max(a, b - 2))
            cv.polys([cv.side_quad(X, zd, zd + 1.5, 0, 2.3)], BUILDINGS, _grey(rng, 30, 120), Zm)

    return draw


def _low_structure(cv: Canvas, rng, cls: int, X: float, a: float, b: float):
    Zm = (a + b) / 2
    if cls == WALLS:
        hgt, col = rng.uniform(0.8, 3.5), wall_color(rng)
    elif cls == FENCES:
        hgt, col = rng.uniform(0.9, 2.2), fence_color(rng)
    else:  # hedge
        hgt, col = rng.uniform(0.6, 2.0), vegetation_color(rng)
    kind = rng.integers(3)

    def draw() -> None:
        if cls != FENCES:
            cv.polys([cv.side_quad(X, a, b, 0, hgt)], cls, col, Zm)
            if cls == WALLS and rng.random() < 0.6:  # coping on top, brick courses
                cv.polys([cv.side_quad(X, a, b, hgt - 0.15, hgt)], cls, _jitter(rng, col, 25), Zm)
                dark = _mix(col, (0, 0, 0), 0.25)
                ys = np.arange(0.3, hgt - 0.2, 0.3)
                cv.polys(cv.side_quad(X, a, b, ys, ys + 0.04), cls, dark, Zm)
            return
        # a fence: posts and rails, see-through between them
        spacing = {0: 2.5, 1: 0.25, 2: 0.12}[int(kind)]
        bar = {0: 0.12, 1: 0.06, 2: 0.04}[int(kind)]
        zs = np.arange(a, b, spacing)
        cv.polys(cv.side_quad(X, zs, zs + bar, 0.0, hgt), FENCES, col, Zm)
        ys = np.array([hgt * 0.15, hgt * 0.55, hgt - 0.08])
        cv.polys(cv.side_quad(X, a, b, ys, ys + 0.08), FENCES, col, Zm)

    return draw


def _tree(cv: Canvas, rng, X: float, Z: float):
    trunk_h = rng.uniform(1.5, 4)
    trunk_w = rng.uniform(0.2, 0.5)
    r = rng.uniform(1.2, 3.5)
    tcol = _jitter(rng, (90, 70, 50), 15)
    blobs = [
        (X + rng.normal(0, r * 0.4), trunk_h + r * rng.uniform(0.6, 1.3), rng.uniform(0.6, 1.0) * r)
        for _ in range(int(rng.integers(3, 7)))
    ]
    base = vegetation_color(rng)
    cols = [_jitter(rng, base, 10) for _ in blobs]

    def draw() -> None:
        cv.polys(
            [cv.front_quad(X - trunk_w / 2, X + trunk_w / 2, 0, trunk_h + r * 0.5, Z)], VEGETATION, tcol, Z
        )
        s = cv.cam.scale(Z)
        for (bx, by, br), c in zip(blobs, cols, strict=True):
            p = cv.cam.project(bx, by, Z)
            cv.ellipse(p, (br * s, br * s * rng.uniform(0.75, 1.05)), VEGETATION, c, Z)

    return draw


def _pole(cv: Canvas, rng, X: float, Z: float, sign: int):
    hgt = rng.uniform(3.0, 9.0)
    pw = rng.uniform(0.15, 0.35)
    col = pole_color(rng)
    arm = rng.random() < 0.45 and hgt > 5
    arm_len = rng.uniform(1.0, 3.0)
    sign_kind = rng.choice(["none", "circle", "triangle", "rect", "diamond"], p=[0.3, 0.25, 0.15, 0.2, 0.1])
    sign_y = rng.uniform(2.0, min(3.2, hgt - 0.3))
    sign_r = rng.uniform(0.3, 0.5)
    face = _pick(
        rng,
        [
            lambda: (200, 30, 35),
            lambda: (35, 75, 180),
            lambda: (230, 200, 40),
            lambda: (235, 235, 230),
            lambda: (30, 130, 70),
        ],
    )
    inner = _pick(rng, [lambda: (240, 240, 240), lambda: (20, 20, 20), lambda: (200, 30, 35)])
    two = rng.random() < 0.25  # a second sign below

    def draw() -> None:
        polys = [cv.front_quad(X - pw / 2, X + pw / 2, 0, hgt, Z)]
        if arm:
            xa = X - sign * arm_len
            polys.append(cv.front_quad(min(X, xa), max(X, xa), hgt - 0.2, hgt - 0.05, Z))
            polys.append(cv.front_quad(xa - 0.3 * sign - 0.2, xa + 0.2, hgt - 0.35, hgt - 0.1, Z))
        cv.polys(polys, POLES, col, Z)
        if sign_kind == "none":
            return
        for k, y in enumerate([sign_y, sign_y - 2.2 * sign_r] if two else [sign_y]):
            if y - sign_r < 0.5:
                continue
            _sign(cv, sign_kind if k == 0 else "rect", X, y, Z, sign_r, face, inner)

    return draw


def _sign(cv: Canvas, kind: str, X: float, Y: float, Z: float, r: float, face: Color, inner: Color) -> None:
    c = cv.cam.project(X, Y, Z)
    s = cv.cam.scale(Z)
    if kind == "circle":
        cv.ellipse(c, (r * s, r * s), SIGNS, face, Z)
        cv.ellipse(c, (0.65 * r * s, 0.65 * r * s), SIGNS, inner, Z)
        return
    if kind == "triangle":
        pts = np.array([[X - r, Y - 0.8 * r], [X + r, Y - 0.8 * r], [X, Y + r]])
        pts_in = np.array([[X - 0.6 * r, Y - 0.5 * r], [X + 0.6 * r, Y - 0.5 * r], [X, Y + 0.55 * r]])
    elif kind == "diamond":
        pts = np.array([[X - r, Y], [X, Y - r], [X + r, Y], [X, Y + r]])
        pts_in = np.array([[X - 0.7 * r, Y], [X, Y - 0.7 * r], [X + 0.7 * r, Y], [X, Y + 0.7 * r]])
    else:
        pts = np.array(
            [
                [X - 1.2 * r, Y - 0.7 * r],
                [X + 1.2 * r, Y - 0.7 * r],
                [X + 1.2 * r, Y + 0.7 * r],
                [X - 1.2 * r, Y + 0.7 * r],
            ]
        )
        pts_in = None
    cv.polys([cv.cam.project(pts[:, 0], pts[:, 1], Z)], SIGNS, face, Z)
    if pts_in is not None:
        cv.polys([cv.cam.project(pts_in[:, 0], pts_in[:, 1], Z)], SIGNS, inner, Z)


def _pedestrian(cv: Canvas, rng, X: float, Z: float):
    hgt = rng.uniform(1.5, 1.95) if rng.random() < 0.85 else rng.uniform(1.0, 1.4)
    wd = hgt * rng.uniform(0.22, 0.3)
    shirt, pants, skin = clothing_color(rng), clothing_color(rng), skin_color(rng)
    hair = _grey(rng, 10, 90) if rng.random() < 0.8 else clothing_color(rng)
    stride = rng.uniform(0, 0.25) * hgt
    bag = rng.random() < 0.3

    def draw() -> None:
        leg, d = wd * 0.38, stride / 2
        hip = 0.48 * hgt
        left_x = np.array([X - wd / 2 + 0.02 - d, X - wd / 2 + 0.02 + leg - d, X - 0.02, X - wd / 2 + 0.02])
        right_x = np.array([X + wd / 2 - 0.02 - leg + d, X + wd / 2 - 0.02 + d, X + wd / 2 - 0.02, X + 0.02])
        ys = np.array([0.0, 0.0, hip, hip])
        legs = [cv.cam.project(left_x, ys, Z), cv.cam.project(right_x, ys, Z)]
        cv.polys(legs, PEDESTRIANS, pants, Z)
        torso = cv.front_quad(X - wd / 2, X + wd / 2, 0.46 * hgt, 0.83 * hgt, Z)
        arms = [
            cv.front_quad(X - wd / 2 - 0.09, X - wd / 2 + 0.01, 0.45 * hgt, 0.8 * hgt, Z),
            cv.front_quad(X + wd / 2 - 0.01, X + wd / 2 + 0.09, 0.45 * hgt, 0.8 * hgt, Z),
        ]
        cv.polys([torso, *arms], PEDESTRIANS, shirt, Z)
        if bag:
            cv.polys(
                [cv.front_quad(X + wd / 2, X + wd / 2 + 0.25, 0.4 * hgt, 0.6 * hgt, Z)],
                PEDESTRIANS,
                clothing_color(rng),
                Z,
            )
        s = cv.cam.scale(Z)
        head = cv.cam.project(X, 0.91 * hgt, Z)
        cv.ellipse(head, (0.075 * hgt * s, 0.09 * hgt * s), PEDESTRIANS, skin, Z)
        cv.ellipse(head - [0, 0.04 * hgt * s], (0.075 * hgt * s, 0.05 * hgt * s), PEDESTRIANS, hair, Z)

    return draw


def _vehicle(cv: Canvas, rng, X: float, Z: float):
    kind = rng.choice(["car", "van", "truck"], p=[0.7, 0.18, 0.12])
    wd = {"car": rng.uniform(1.7, 2.0), "van": rng.uniform(1.9, 2.2), "truck": rng.uniform(2.3, 2.6)}[kind]
    hgt = {"car": rng.uniform(1.35, 1.6), "van": rng.uniform(1.9, 2.5), "truck": rng.uniform(2.8, 3.8)}[kind]
    length = {"car": rng.uniform(3.8, 4.8), "van": rng.uniform(4.5, 5.5), "truck": rng.uniform(7, 12)}[kind]
    body = vehicle_color(rng)
    glass = _pick(rng, [lambda: _grey(rng, 15, 60), lambda: (50, 65, 85), lambda: _grey(rng, 90, 150)])
    tyre = _grey(rng, 10, 40, 2)
    front = rng.random() < 0.35  # oncoming: headlights instead of tail lights
    lamp = _jitter(rng, (240, 240, 215) if front else (200, 25, 25), 10)
    x0, x1 = X - wd / 2, X + wd / 2

    def draw() -> None:
        # the visible flank (drawn first: it lies behind the end face)
        if x0 > 0.05 or x1 < -0.05:
            xs = x0 if x0 > 0 else x1
            flank = [cv.side_quad(xs, Z, Z + length, 0.25, hgt * (0.62 if kind == "car" else 1.0))]
            if kind == "car":
                flank.append(
                    cv.cam.project(
                        xs, np.array([0.6, 0.6, 1, 1]) * hgt, Z + np.array([0.15, 0.8, 0.68, 0.3]) * length
                    )
                )
            cv.polys(flank, VEHICLES, _mix(body, (0, 0, 0), 0.25), Z)
            wheels = [cv.side_quad(xs, Z + d * length, Z + d * length + 0.65, 0.0, 0.6) for d in (0.12, 0.72)]
            cv.polys(wheels, VEHICLES, tyre, Z)
        # the end face
        polys_tyre = [
            cv.front_quad(x0 + 0.05, x0 + 0.35, 0.0, 0.45, Z),
            cv.front_quad(x1 - 0.35, x1 - 0.05, 0.0, 0.45, Z),
        ]
        cv.polys(polys_tyre, VEHICLES, tyre, Z)
        if kind == "car":
            lower = cv.front_quad(x0, x1, 0.25, 0.62 * hgt, Z)
            cabin = cv.cam.project(
                np.array([x0 + 0.05, x1 - 0.05, x1 - 0.2, x0 + 0.2]), np.array([0.6, 0.6, 1, 1]) * hgt, Z
            )
            cv.polys([lower, cabin], VEHICLES, body, Z)
            win = cv.cam.project(
                np.array([x0 + 0.2, x1 - 0.2, x1 - 0.3, x0 + 0.3]),
                np.array([0.65, 0.65, 0.95, 0.95]) * hgt,
                Z,
            )
            cv.polys([win], VEHICLES, glass, Z)
        else:
            cv.polys([cv.front_quad(x0, x1, 0.3, hgt, Z)], VEHICLES, body, Z)
            cv.polys([cv.front_quad(x0 + 0.15, x1 - 0.15, hgt * 0.6, hgt * 0.9, Z)], VEHICLES, glass, Z)
        lamps = [
            cv.front_quad(x0 + 0.1, x0 + 0.4, 0.5, 0.7, Z),
            cv.front_quad(x1 - 0.4, x1 - 0.1, 0.5, 0.7, Z),
        ]
        cv.polys(lamps, VEHICLES, lamp, Z)
        plate = cv.front_quad(X - 0.25, X + 0.25, 0.35, 0.47, Z)
        cv.polys([plate], VEHICLES, (225, 225, 215), Z)

    return draw


def _clutter(cv: Canvas, rng, X: float, Z: float):
    kind = rng.choice(["bin", "cone", "box", "bench", "barrier", "hydrant"])
    col = other_color(rng)

    def draw() -> None:
        if kind == "cone":
            pts = cv.cam.project(np.array([X - 0.18, X + 0.18, X]), np.array([0, 0, 0.7]), Z)
            cv.polys([pts], OTHER, (235, 110, 25), Z)
            cv.polys([cv.front_quad(X - 0.09, X + 0.09, 0.3, 0.4, Z)], OTHER, (240, 240, 240), Z)
        elif kind == "bin":
            cv.polys([cv.front_quad(X - 0.3, X + 0.3, 0, 1.0, Z)], OTHER, col, Z)
            cv.polys([cv.front_quad(X - 0.34, X + 0.34, 0.95, 1.1, Z)], OTHER, _mix(col, (0, 0, 0), 0.3), Z)
        elif kind == "box":
            s = rng.uniform(0.4, 1.2)
            cv.polys([cv.front_quad(X - s / 2, X + s / 2, 0, s * rng.uniform(0.6, 1.2), Z)], OTHER, col, Z)
        elif kind == "bench":
            cv.polys(
                [
                    cv.front_quad(X - 0.8, X + 0.8, 0.4, 0.5, Z),
                    cv.front_quad(X - 0.8, X + 0.8, 0.6, 0.9, Z),
                    cv.front_quad(X - 0.75, X - 0.65, 0, 0.45, Z),
                    cv.front_quad(X + 0.65, X + 0.75, 0, 0.45, Z),
                ],
                OTHER,
                col,
                Z,
            )
        elif kind == "barrier":
            cv.polys([cv.front_quad(X - 1.0, X + 1.0, 0, 0.9, Z)], OTHER, (235, 235, 230), Z)
            xs = np.arange(X - 0.9, X + 0.9, 0.5)
            cv.polys(cv.front_quad(xs, xs + 0.25, 0.45, 0.9, Z), OTHER, (210, 40, 30), Z)
        else:
            cv.polys(
                [cv.front_quad(X - 0.15, X + 0.15, 0, 0.75, Z)], OTHER, _jitter(rng, (190, 40, 30), 20), Z
            )

    return draw


def _hood(cv: Canvas, rng: np.random.Generator) -> None:
    """The ego car's bonnet across the bottom rows, as in CARLA captures."""
    base = cv.h * (1 - rng.uniform(0.06, 0.15))
    bulge = cv.h * rng.uniform(0.01, 0.05)
    xs = np.linspace(-1, cv.w + 1, 24)
    u = (xs - cv.w / 2) / (cv.w / 2)
    ys = base - bulge * (1 - u**2) + cv.h * 0.08 * np.abs(u) ** 3
    poly = np.concatenate([np.stack([xs, ys], 1), [[cv.w + 1, cv.h + 1], [-1, cv.h + 1]]])
    col = _mix(vehicle_color(rng), (0, 0, 0), 0.3)
    cv.polys([poly], VEHICLES, col)
    hl = np.stack([xs, ys + cv.h * 0.012], 1)[6:18]
    cv.polys([np.concatenate([hl, hl[::-1] + [0, cv.h * 0.01]])], VEHICLES, _mix(col, (255, 255, 255), 0.3))


def _finish(cv: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Shadows, class-dependent texture, global light and lens blur (render resolution)."""
    h, w = cv.h, cv.w
    img = cv.img
    cam = cv.cam
    # shadows cast across the ground (and whatever stands in them)
    if rng.random() < 0.6 and not cv.style.night:
        shade = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            z0 = rng.uniform(2, 40)
            x0 = rng.uniform(-15, 5)
            poly = cv.ground_quad(x0, x0 + rng.uniform(3, 20), z0, z0 + rng.uniform(3, 30))
            cv2.fillPoly(shade, [np.round(poly * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
        for _ in range(int(rng.integers(0, 8))):  # dappled tree shadows
            z = rng.uniform(3, 30)
            c = cam.project(rng.uniform(-10, 10), 0.0, z)
            r = cam.scale(z) * rng.uniform(0.5, 2)
            if abs(c[0]) < 4 * w and abs(c[1]) < 4 * h:
                cv2.ellipse(shade, (int(c[0]), int(c[1])), (int(r) + 1, int(r * 0.4) + 1), 0, 0, 360, 1.0, -1)
        shade = cv2.GaussianBlur(shade, (0, 0), 1.5)
        img *= 1.0 - rng.uniform(0.3, 0.6) * shade[..., None]
    # texture: blotches and grain whose strength depends on the class
    lo = cv2.resize(
        rng.standard_normal((h // 16 + 2, w // 16 + 2)).astype(np.float32),
        (w, h),
        interpolation=cv2.INTER_CUBIC,
    )
    mid = cv2.resize(
        rng.standard_normal((h // 3 + 2, w // 3 + 2)).astype(np.float32),
        (w, h),
        interpolation=cv2.INTER_LINEAR,
    )
    amp = TEXTURE[cv.mask] * rng.uniform(0.4, 1.0)
    img *= (1.0 + amp[..., 0] * lo + amp[..., 1] * mid)[..., None]
    # global light: brightness, colour cast, gamma, vignetting
    img *= np.array(cv.style.cast, np.float32) * cv.style.brightness
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img *= (1.0 - rng.uniform(0.0, 0.25) * r2 / 2)[..., None]
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    sigma = rng.uniform(0.3, 1.3)
    return cv2.GaussianBlur(img, (0, 0), sigma)
