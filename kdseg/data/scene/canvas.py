"""Drawing the road scene: the class ids, the pinhole camera, the style of light, and the canvas that
draws every polygon into the image and the label mask alike."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kdseg.data.scene.colors import Color, _mix

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
