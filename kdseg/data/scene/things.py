"""The things standing in the scene: facades and their windows, walls and fences, trees, poles with
lights and signs, pedestrians, vehicles, clutter, and the ego car's bonnet."""

from __future__ import annotations

import numpy as np

from kdseg.data.scene.canvas import (
    BUILDINGS,
    FENCES,
    OTHER,
    PEDESTRIANS,
    POLES,
    SIGNS,
    VEGETATION,
    VEHICLES,
    WALLS,
    Canvas,
)
from kdseg.data.scene.colors import Color, _grey, _jitter, _mix, pick_color


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
    return pick_color(rng, "window")


def _facade(cv: Canvas, rng, X: float, a: float, b: float, hgt: float):
    col = pick_color(rng, "building")
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
        hgt, col = rng.uniform(0.8, 3.5), pick_color(rng, "wall")
    elif cls == FENCES:
        hgt, col = rng.uniform(0.9, 2.2), pick_color(rng, "fence")
    else:  # hedge
        hgt, col = rng.uniform(0.6, 2.0), pick_color(rng, "vegetation")
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
    base = pick_color(rng, "vegetation")
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
    col = pick_color(rng, "pole")
    arm = rng.random() < 0.45 and hgt > 5
    arm_len = rng.uniform(1.0, 3.0)
    sign_kind = rng.choice(["none", "circle", "triangle", "rect", "diamond"], p=[0.3, 0.25, 0.15, 0.2, 0.1])
    sign_y = rng.uniform(2.0, min(3.2, hgt - 0.3))
    sign_r = rng.uniform(0.3, 0.5)
    face = pick_color(rng, "sign_face")
    inner = pick_color(rng, "sign_symbol")
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
    shirt, pants, skin = pick_color(rng, "clothing"), pick_color(rng, "clothing"), pick_color(rng, "skin")
    hair = _grey(rng, 10, 90) if rng.random() < 0.8 else pick_color(rng, "clothing")
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
                pick_color(rng, "clothing"),
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
    body = pick_color(rng, "vehicle")
    glass = pick_color(rng, "glass")
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
    col = pick_color(rng, "other")

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
    col = _mix(pick_color(rng, "vehicle"), (0, 0, 0), 0.3)
    cv.polys([poly], VEHICLES, col)
    hl = np.stack([xs, ys + cv.h * 0.012], 1)[6:18]
    cv.polys([np.concatenate([hl, hl[::-1] + [0, cv.h * 0.01]])], VEHICLES, _mix(col, (255, 255, 255), 0.3))
