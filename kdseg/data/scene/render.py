"""One scene: its style, the ground, road and lanes, the planned backdrop and objects, and the finish
(shadows, texture, light, blur, noise). :func:`render_scene` is the entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from kdseg.data.scene.canvas import (
    BUILDINGS,
    FENCES,
    NONE,
    OTHER,
    ROADLINES,
    ROADS,
    SIDEWALKS,
    VEGETATION,
    WALLS,
    Z_FAR,
    Z_NEAR,
    Camera,
    Canvas,
    Style,
)
from kdseg.data.scene.colors import Color, _grey, _jitter, _mix, pick_color
from kdseg.data.scene.things import (
    _clutter,
    _facade,
    _hood,
    _low_structure,
    _pedestrian,
    _pole,
    _tree,
    _vehicle,
    _windows_front,
)

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
        tcol = pick_color(rng, {VEGETATION: "vegetation", OTHER: "other", SIDEWALKS: "sidewalk"}[terrain])
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
            col = pick_color(rng, "vegetation")
            cv.ellipse(
                (x + wpx / 2, top + (base - top) / 2), (wpx / 1.6, (base - top) / 1.6 + 1), VEGETATION, col, Z
            )
        elif rng.random() < 0.85:
            col = pick_color(rng, "building")
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
            col = pick_color(rng, "vegetation") if cls == VEGETATION else pick_color(rng, "other")
            cv.polys([cv.ground_quad(min(xa, xb), max(xa, xb), za, za + rng.uniform(2, 15))], cls, col)
        if s.walk > 0:
            col = pick_color(rng, "sidewalk")
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
    rcol = pick_color(rng, "road")
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
            col = pick_color(rng, "building")
            cv.polys([cv.front_quad(x, x + wd, 0, hgt, z_end)], BUILDINGS, col, z_end)
            _windows_front(cv, rng, x, x + wd, hgt, z_end)
        else:
            hgt = rng.uniform(4, 12)
            cv.polys(
                [cv.front_quad(x, x + wd, 0, hgt, z_end)], VEGETATION, pick_color(rng, "vegetation"), z_end
            )
        x += wd


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
