"""Figures as mosaics of tiles (matplotlib): colourised masks, normalised maps, a class legend, PNG output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdseg.fileio import atomic_write


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of a class-id mask; the ignore index and unknown ids are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    lut[: len(pal)] = pal
    if 0 <= ignore_index < 256:
        lut[ignore_index] = 0
    return lut[np.clip(np.asarray(mask), 0, 255).astype(np.uint8)]


def norm01(a: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] after clipping to the 1st-99th percentile (a flat map becomes zeros)."""
    a = np.asarray(a, dtype=np.float32)
    if a.size == 0:
        return a
    lo, hi = np.percentile(a, [1, 99])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def resize_map(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    if a.shape == tuple(size):
        return a
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def save_png(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG atomically."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def _rgb(img: np.ndarray, cmap: str | None) -> np.ndarray:
    """uint8 RGB of an RGB image, or of a [0, 1] map through a matplotlib colormap."""
    if cmap is None:
        return np.asarray(img, dtype=np.uint8)[..., :3]
    from matplotlib import colormaps

    return (colormaps[cmap](np.clip(img, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def _fit(img: np.ndarray, th: int, tw: int) -> np.ndarray:
    import cv2

    if img.shape[:2] == (th, tw):
        return img
    return cv2.resize(img, (tw, th), interpolation=cv2.INTER_NEAREST)


@dataclass
class Tile:
    """One picture in a mosaic: an RGB image or a [0, 1] map with a colormap, and its caption."""

    image: np.ndarray | None
    caption: str = ""
    cmap: str | None = None
    note: str = ""  # text drawn in place of a missing image


class Mosaic:
    """A grid of equally sized tiles drawn on ONE axes with text around it (fast to render, small to hold).

    Every row has a label on the left; every tile a caption above it. Rendering dozens of small
    maps this way takes a fraction of a second, where one matplotlib axes per map takes seconds.
    Each tile is its own image at its pixel position, not one figure-sized image: matplotlib resamples
    an image through float RGBA arrays of its drawn size (about 95 MB at ~1000x900 pixels, in every
    training process that logs images), a tile's through a few hundred KB.
    """

    def __init__(self, ncols: int, tile: tuple[int, int], label_width: int = 0, caption_height: int = 14):
        self.ncols, (self.th, self.tw) = ncols, tile
        self.label_width, self.caption_height, self.gap = label_width, caption_height, 4
        self.rows: list[tuple[str, list[Tile]]] = []

    def add_row(self, label: str, tiles: Sequence[Tile]) -> None:
        self.rows.append((label, list(tiles)))

    def figure(self, title: str = "", subtitle: str = "", footer: int = 0, dpi: int = 100):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        cell_h, cell_w = self.th + self.caption_height, self.tw + self.gap
        head = (18 if title else 4) + (12 * (subtitle.count("\n") + 1) if subtitle else 0)
        width = self.label_width + self.ncols * cell_w + self.gap
        height = head + len(self.rows) * (cell_h + self.gap) + footer
        fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        blank = np.full((self.th, self.tw, 3), 238, dtype=np.uint8)  # where a note stands for an image

        def put(img: np.ndarray, x0: int, y0: int) -> None:  # pixel (x0, y0) from the top left
            extent = (x0, x0 + self.tw, y0 + self.th, y0)
            ax.imshow(img, interpolation="nearest", extent=extent, aspect="auto")

        for r, (label, tiles) in enumerate(self.rows):
            y0 = head + r * (cell_h + self.gap) + self.caption_height
            if label:
                ax.text(self.label_width - 6, y0 + self.th / 2, label, ha="right", va="center", fontsize=7)
            for c, tile in enumerate(tiles[: self.ncols]):
                x0 = self.label_width + c * cell_w + self.gap
                if tile.image is not None:
                    put(_fit(_rgb(tile.image, tile.cmap), self.th, self.tw), x0, y0)
                elif tile.note:
                    put(blank, x0, y0)
                    ax.text(
                        x0 + self.tw / 2, y0 + self.th / 2, tile.note,
                        ha="center", va="center", fontsize=7, color="0.35",
                    )  # fmt: skip
                if tile.caption:
                    ax.text(x0 + self.tw / 2, y0 - 2, tile.caption, ha="center", va="bottom", fontsize=6.5)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        if title:
            ax.text(width / 2, 3, title, ha="center", va="top", fontsize=8.5, weight="bold")
        if subtitle:
            ax.text(width / 2, 17 if title else 3, subtitle, ha="center", va="top", fontsize=6.5, color="0.3")
        self.height = height
        return fig


def class_legend(
    fig, class_names: Sequence[str], palette: np.ndarray, ignore_index: int, height_px: int
) -> None:
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=np.asarray(palette[i], dtype=float) / 255, edgecolor="0.3", label=name)
        for i, name in enumerate(class_names)
    ]
    if 0 <= ignore_index < 256:
        handles.append(Patch(facecolor="black", edgecolor="0.3", label="ignore"))
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 6),
        fontsize=6.5,
        frameon=False,
        handlelength=1.2,
        columnspacing=1.0,
        borderaxespad=0.2,
    )
