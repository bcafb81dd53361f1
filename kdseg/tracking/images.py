"""Pictures of what the networks do: prediction panels and layer-wise activation panels (PNG).

:class:`EpochImages` is an epoch hook for :func:`kdseg.train.train_kd`. On the first epoch, every
``every`` epochs and on the last epoch it runs teacher and student (eval mode, no grad) on a fixed
set of validation images, normalised exactly as validation is, and writes into ``run_dir/images/``:

``epoch_XXX_predictions.png``
    one row per image: input | ground truth | teacher | student, colourised with the dataset's
    palette (ignore = black), each prediction titled with its pixel accuracy on that image.
``epoch_XXX_layers.png``
    how data flows through both networks, for the first of those images: one row per tensor of
    each feature site (``encoder`` stages, ``bottleneck``, ``decoder``, ``logits``), teacher and
    student side by side. Features: the channel-mean activation energy ``mean_c |x_c|`` and the three
    strongest channels; logits: the colourised prediction and the probability maps of the three
    most frequent classes. The last column, ``|T - S|``, shows where the student departs from the
    teacher: the difference of the min-max normalised energy maps (resized to a common size), or the
    total-variation distance between the two class distributions for logits. Student and teacher
    tensors are paired as distillation pairs them (:func:`kdseg.distill.adapters.pair_indices`:
    aligned from the deepest stage); distilled sites are marked ``[KD]``.
``classes.json``
    class names, palette and ignore index (read by ``kdseg report``).

Per logged epoch it also adds ``layer_sim_<site>`` to the epoch's metrics: the Pearson correlation
of teacher and student energy maps averaged over the site's tensor pairs and the fixed images (for
``logits``: the fraction of pixels where both predict the same class). Hooks never change weights;
every module's train/eval mode is restored. A failure here is logged, never raised: pictures must
not end a training run.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdseg.config import SITES
from kdseg.fileio import atomic_write
from kdseg.layout import CLASSES_FILE, IMAGES_DIR

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
LAYERS = "layers"

ImageSink = Callable[[int, dict[str, Path]], None]


# ---------------------------------------------------------------------------------------- helpers


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of a class-id mask; the ignore index and unknown ids are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    lut[: len(pal)] = pal
    if 0 <= ignore_index < 256:
        lut[ignore_index] = 0
    return lut[np.clip(np.asarray(mask), 0, 255).astype(np.uint8)]


def fixed_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (the same every epoch and every trial)."""
    if n <= 0 or k <= 0:
        return []
    k = min(k, n)
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def image_path(run_dir: str | Path, epoch: int, kind: str) -> Path:
    return Path(run_dir) / IMAGES_DIR / f"epoch_{epoch:03d}_{kind}.png"


def latest_images(run_dir: str | Path) -> dict[str, Path]:
    """The most recent ``{predictions, layers}`` PNGs of a run folder (empty when none was written)."""
    folder = Path(run_dir) / IMAGES_DIR
    out: dict[str, Path] = {}
    for kind in (PREDICTIONS, LAYERS):
        files = sorted(folder.glob(f"epoch_*_{kind}.png"))
        if files:
            out[kind] = files[-1]
    return out


def _norm01(a: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] after clipping to the 1st-99th percentile (a flat map becomes zeros)."""
    a = np.asarray(a, dtype=np.float32)
    if a.size == 0:
        return a
    lo, hi = np.percentile(a, [1, 99])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    if a.shape == tuple(size):
        return a
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return None if den < 1e-12 else float((a * b).sum() / den)


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
    """A grid of equally sized tiles drawn as ONE image with text around it (fast to render).

    Every row has a label on the left; every tile a caption above it. Rendering dozens of small
    maps this way takes a fraction of a second, where one matplotlib axes per map takes seconds.
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
        canvas = np.full((height, width, 3), 255, dtype=np.uint8)
        texts: list[tuple[float, float, str, dict]] = []
        for r, (label, tiles) in enumerate(self.rows):
            y0 = head + r * (cell_h + self.gap) + self.caption_height
            if label:
                texts.append(
                    (self.label_width - 6, y0 + self.th / 2, label, dict(ha="right", va="center", fontsize=7))
                )
            for c, tile in enumerate(tiles[: self.ncols]):
                x0 = self.label_width + c * cell_w + self.gap
                if tile.image is not None:
                    canvas[y0 : y0 + self.th, x0 : x0 + self.tw] = _fit(
                        _rgb(tile.image, tile.cmap), self.th, self.tw
                    )
                elif tile.note:
                    canvas[y0 : y0 + self.th, x0 : x0 + self.tw] = 238
                    texts.append(
                        (
                            x0 + self.tw / 2,
                            y0 + self.th / 2,
                            tile.note,
                            dict(ha="center", va="center", fontsize=7, color="0.35"),
                        )
                    )
                if tile.caption:
                    texts.append(
                        (x0 + self.tw / 2, y0 - 2, tile.caption, dict(ha="center", va="bottom", fontsize=6.5))
                    )
        fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(canvas, interpolation="nearest", extent=(0, width, height, 0))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_axis_off()
        if title:
            ax.text(width / 2, 3, title, ha="center", va="top", fontsize=8.5, weight="bold")
        if subtitle:
            ax.text(width / 2, 17 if title else 3, subtitle, ha="center", va="top", fontsize=6.5, color="0.3")
        for x, y, text, kw in texts:
            ax.text(x, y, text, **kw)
        self.height = height
        return fig


def _legend(fig, class_names: Sequence[str], palette: np.ndarray, ignore_index: int, height_px: int) -> None:
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


# ------------------------------------------------------------------------------------ model runs


@dataclass
class ModelView:
    """One model's outputs on the fixed images: logits [k, C, H, W] and site tensors (CPU float32)."""

    logits: Any  # torch.Tensor
    features: dict[str, list[Any]]  # site -> list of [k, C, h, w]


def _supported_sites(model, sites: Sequence[str]) -> list[str]:
    from kdseg.models import tap_modules

    points = tap_modules(model)
    return [s for s in sites if s in points]


def run_model(model, x, sites: Sequence[str]) -> ModelView:
    """Logits and site features of ``model`` on batch ``x``: eval mode, no grad, modes restored."""
    import torch

    from kdseg.models import FeatureTaps

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), FeatureTaps(model, _supported_sites(model, sites)) as taps:
            out = model(x)
            logits = out if torch.is_tensor(out) else out["out"]
            seen: dict[int, Any] = {}  # one copy per tensor: a tensor shared by two sites stays shared

            def host(t):
                if id(t) not in seen:
                    seen[id(t)] = t.detach().float().cpu()
                return seen[id(t)]

            feats = {s: [host(t) for t in taps.features[s]] for s in taps.sites}
        return ModelView(logits.detach().float().cpu(), feats)
    finally:
        for m, mode in modes:
            m.training = mode


def prepare_batch(data, cfg_data, indices: Sequence[int]):
    """``(x, shown, gt)``: the normalised batch as validation sees it, the images as shown, the masks."""
    import cv2
    import torch

    from kdseg.data import build_transforms

    tf = build_transforms(cfg_data, train=False)
    h, w = cfg_data.image_size
    xs, shown, gts = [], [], []
    for i in indices:
        img, mask = data.val.images[i], data.val.masks[i]
        out = tf(image=img, mask=mask)
        xs.append(out["image"])
        gts.append(np.asarray(out["mask"], dtype=np.uint8))
        shown.append(
            img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        )
    return torch.stack(xs).float(), np.stack(shown), np.stack(gts)


# ---------------------------------------------------------------------------- prediction panel


def pixel_accuracy(pred: np.ndarray, gt: np.ndarray, ignore_index: int) -> float | None:
    valid = gt != ignore_index
    n = int(valid.sum())
    return None if n == 0 else float((pred[valid] == gt[valid]).mean())


def prediction_figure(
    images: np.ndarray,
    gts: np.ndarray,
    teacher_preds: np.ndarray | None,
    student_preds: np.ndarray,
    palette: np.ndarray,
    class_names: Sequence[str],
    ignore_index: int = 255,
    title: str | None = None,
    tile: int = 160,
):
    """input | ground truth | teacher | student for each image (rows); a class legend below."""
    h, w = images.shape[1:3]
    th, tw = tile, max(16, int(round(tile * w / h)))
    m = Mosaic(4, (th, tw), label_width=0)
    for r in range(len(images)):
        gt = gts[r]
        tiles = [Tile(images[r], "input"), Tile(colorize(gt, palette, ignore_index), "ground truth")]
        for name, preds in (("teacher", teacher_preds), ("student", student_preds)):
            if preds is None:
                tiles.append(Tile(None, name, note="no teacher\n(no-KD baseline)"))
                continue
            acc = pixel_accuracy(preds[r], gt, ignore_index)
            caption = f"{name} (pixel acc {acc:.2f})" if acc is not None else name
            tiles.append(Tile(colorize(preds[r], palette, ignore_index), caption))
        m.add_row("", tiles)
    rows_of_legend = math.ceil((len(class_names) + 1) / 6)
    fig = m.figure(title or "", footer=16 * rows_of_legend + 14)
    _legend(fig, class_names, palette, ignore_index, m.height)
    return fig


# ------------------------------------------------------------------------------- layer panel


@dataclass
class LayerRow:
    """One row of the layer panel: a site tensor of the teacher and/or the student."""

    label: str
    site: str
    teacher: Any | None  # [k, C, h, w] or None
    student: Any | None
    distilled: bool


def layer_rows(
    t: ModelView | None, s: ModelView, sites: Sequence[str], distilled: Sequence[str]
) -> list[LayerRow]:
    """Rows pairing teacher and student tensors per site, as the feature adapters pair them."""
    from kdseg.distill.adapters import pair_indices

    rows: list[LayerRow] = []
    last_encoder: tuple[Any, Any] | None = None
    for site in sites:
        if site == "logits":
            rows.append(
                LayerRow("logits", site, None if t is None else t.logits, s.logits, site in distilled)
            )
            continue
        s_list = s.features.get(site, [])
        t_list = [] if t is None else t.features.get(site, [])
        if not s_list and not t_list:
            continue
        if site == "bottleneck" and last_encoder is not None:
            t0 = t_list[-1] if t_list else None
            s0 = s_list[-1] if s_list else None
            same_t = t0 is last_encoder[0]
            same_s = s0 is last_encoder[1]
            if same_t and same_s and rows and rows[-1].site == "encoder":
                rows[-1].label += "\n= bottleneck"
                rows[-1].distilled = rows[-1].distilled or site in distilled
                continue
        n_s, n_t = len(s_list), len(t_list)
        pairs = pair_indices(n_s, n_t) if t is not None else []
        if t is None:
            entries = [(None, i) for i in range(n_s)]
        else:
            paired_s = {i for i, _ in pairs}
            paired_t = {j for _, j in pairs}
            # shallow unpaired stages of the longer list first, then the pairs (shallow to deep)
            entries = [(j, None) for j in range(n_t) if j not in paired_t]
            entries += [(None, i) for i in range(n_s) if i not in paired_s]
            entries += [(j, i) for i, j in pairs]
        multi = max(n_s, n_t) > 1
        for j, i in entries:
            tt = t_list[j] if j is not None else None
            ss = s_list[i] if i is not None else None
            if multi:
                parts = []
                if j is not None:
                    parts.append(f"T{j + 1}/{n_t}")
                if i is not None:
                    parts.append(f"S{i + 1}/{n_s}")
                label = f"{site} {' '.join(parts)}"
            else:
                label = site
            rows.append(
                LayerRow(label, site, tt, ss, site in distilled and tt is not None and ss is not None)
            )
        if site == "encoder":
            last_encoder = (t_list[-1] if t_list else None, s_list[-1] if s_list else None)
    return rows


def _energy(x) -> np.ndarray:
    """``mean_c |x_c|`` of one [C, h, w] tensor."""
    return x.abs().mean(0).numpy()


def row_similarity(row: LayerRow) -> float | None:
    """Similarity of the teacher and student tensors of a row, averaged over the images."""
    if row.teacher is None or row.student is None:
        return None
    if row.site == "logits":
        return float((row.teacher.argmax(1) == row.student.argmax(1)).float().mean())
    te, se = row.teacher.abs().mean(1).numpy(), row.student.abs().mean(1).numpy()  # [k, h, w]
    size = max(te.shape[1:], se.shape[1:])
    vals = [c for b in range(len(te)) if (c := _corr(_resize(te[b], size), _resize(se[b], size))) is not None]
    return float(np.mean(vals)) if vals else None


def site_similarity(rows: Sequence[LayerRow]) -> dict[str, float]:
    """``{site: mean similarity over its rows}`` (see :func:`row_similarity`)."""
    by_site: dict[str, list[float]] = {}
    for r in rows:
        v = row_similarity(r)
        if v is not None:
            by_site.setdefault(r.site, []).append(v)
    return {site: float(np.mean(v)) for site, v in by_site.items()}


def _side_maps(x, site: str, palette, ignore_index, class_names) -> list[Tile]:
    """Mean energy (or the prediction) and the three strongest channels (classes) of one [C, h, w] tensor."""
    import torch

    size = f" {x.shape[-2]}x{x.shape[-1]}"
    if site == "logits":
        probs = torch.softmax(x, 0)
        pred = probs.argmax(0)
        out = [Tile(colorize(pred.numpy(), palette, ignore_index), "prediction" + size)]
        counts = torch.bincount(pred.flatten(), minlength=x.shape[0]).float() + probs.mean((1, 2)) * 1e-3
        for c in counts.argsort(descending=True)[:3].tolist():
            name = class_names[c] if c < len(class_names) else f"class {c}"
            out.append(Tile(probs[c].numpy(), f"p({name[:12]})", "viridis"))
        return out
    energy = x.abs().mean((1, 2))
    out = [Tile(_norm01(_energy(x)), f"mean|x| {x.shape[0]}ch" + size, "magma")]
    for c in energy.argsort(descending=True)[:3].tolist():
        out.append(Tile(_norm01(x[c].numpy()), f"channel {c}", "magma"))
    return out


def _delta_map(row: LayerRow) -> np.ndarray:
    import torch

    t, s = row.teacher[0], row.student[0]
    if row.site == "logits":
        return 0.5 * (torch.softmax(t, 0) - torch.softmax(s, 0)).abs().sum(0).numpy()
    te, se = _energy(t), _energy(s)
    size = max(te.shape, se.shape)
    return np.abs(_norm01(_resize(te, size)) - _norm01(_resize(se, size)))


LAYERS_KEY = (
    "columns 1-4: teacher (T), 5-8: student (S); mean|x|: channel-mean activation energy, then the 3 strongest "
    "channels (logits: prediction, then the 3 most frequent classes)\n"
    "|T - S|: where the student departs from the teacher (normalised energy maps; logits: total variation "
    "of the class distributions); sim: energy-map correlation (logits: same-class pixel fraction); [KD]: distilled"
)


def layers_figure(
    rows: Sequence[LayerRow],
    image: np.ndarray,
    gt: np.ndarray,
    palette: np.ndarray,
    class_names: Sequence[str],
    ignore_index: int = 255,
    title: str | None = None,
    tile: int = 88,
):
    """The layer-wise panel (see the module docstring) for the first image of the rows' batch."""
    blank = [Tile(None)] * 9
    m = Mosaic(9, (tile, tile), label_width=150)
    m.add_row(
        "input", [Tile(image, "input"), Tile(colorize(gt, palette, ignore_index), "ground truth"), *blank[:7]]
    )
    for row in rows:
        sim = row_similarity(row)
        label = f"{row.label}{' [KD]' if row.distilled else ''}" + (
            f"\nsim {sim:.2f}" if sim is not None else ""
        )
        tiles: list[Tile] = []
        for who, x in (("T", row.teacher), ("S", row.student)):
            if x is None:
                tiles += [
                    Tile(None, note="-" if who == "S" or row.student is None else "no teacher")
                ] + blank[:3]
                continue
            maps = _side_maps(x[0], row.site, palette, ignore_index, class_names)
            tiles += [Tile(t.image, f"{who} {t.caption}", t.cmap) for t in maps]
        if row.teacher is not None and row.student is not None:
            tiles.append(Tile(np.clip(_delta_map(row), 0, 1), "|T - S|", "inferno"))
        m.add_row(label, tiles)
    return m.figure(title or "", subtitle=LAYERS_KEY)


# ------------------------------------------------------------------------------------ the hook


class EpochImages:
    """Epoch hook: prediction and layer-wise PNGs of a fixed set of validation images.

    ``every``: log on epoch 1, every ``every`` epochs and on the last epoch (0 = never).
    ``num_images``: how many validation images (spread evenly over the split).
    ``sites``: the feature sites to show (default: all four; distilled ones are marked).
    ``sink(epoch, {"predictions": path, "layers": path})`` is called after writing (e.g. W&B).
    """

    def __init__(
        self,
        every: int,
        *,
        num_images: int = 4,
        sites: Sequence[str] | None = None,
        sink: ImageSink | None = None,
    ):
        self.every = int(every)
        self.num_images = int(num_images)
        self.sites = list(sites) if sites is not None else list(SITES)
        self.sink = sink
        self.written: dict[int, dict[str, Path]] = {}

    def due(self, epoch: int, epochs: int) -> bool:
        if self.every <= 0:
            return False
        return epoch == 1 or epoch % self.every == 0 or epoch == epochs

    def __call__(self, ctx) -> None:
        if ctx.run_dir is None or not self.due(ctx.epoch, ctx.cfg.train.epochs):
            return
        try:
            paths, sims = self.render(ctx)
        except Exception as e:  # pictures never end a run
            log.warning("kdseg: image logging failed at epoch %s: %s: %s", ctx.epoch, type(e).__name__, e)
            return
        for site, v in sims.items():
            ctx.metrics[f"layer_sim_{site}"] = v
        self.written[ctx.epoch] = paths
        if self.sink is not None:
            try:
                self.sink(ctx.epoch, paths)
            except Exception as e:
                log.warning("kdseg: image sink failed: %s: %s", type(e).__name__, e)

    def render(self, ctx) -> tuple[dict[str, Path], dict[str, float]]:
        """Run the models and write both PNGs; returns their paths and the per-site similarities."""
        cfg, data = ctx.cfg, ctx.data
        run_dir = Path(ctx.run_dir)
        idx = fixed_indices(len(data.val), self.num_images)
        if not idx:
            return {}, {}
        x, shown, gts = prepare_batch(data, cfg.data, idx)
        x = x.to(ctx.device)
        s_view = run_model(ctx.student, x, self.sites)
        t_view = run_model(ctx.teacher, x, self.sites) if ctx.teacher is not None else None
        palette, names, ignore = np.asarray(data.palette), list(data.class_names), int(data.ignore_index)
        self._write_classes(run_dir, names, palette, ignore)
        distilled = list(cfg.distill.sites) if ctx.teacher is not None and cfg.distill.mode != "none" else []

        s_pred = s_view.logits.argmax(1).numpy().astype(np.uint8)
        t_pred = t_view.logits.argmax(1).numpy().astype(np.uint8) if t_view is not None else None
        miou = ctx.metrics.get("val_miou")
        t_miou = ctx.metrics.get("teacher_val_miou")
        summary = f"epoch {ctx.epoch}" + (f" - student val mIoU {miou:.3f}" if miou is not None else "")
        if t_miou is not None:
            summary += f", teacher {t_miou:.3f}"
        paths: dict[str, Path] = {}
        fig = prediction_figure(shown, gts, t_pred, s_pred, palette, names, ignore, title=summary)
        paths[PREDICTIONS] = save_png(fig, image_path(run_dir, ctx.epoch, PREDICTIONS))

        rows = layer_rows(t_view, s_view, self.sites, distilled)
        sims = site_similarity(rows)
        fig = layers_figure(
            rows, shown[0], gts[0], palette, names, ignore, title=f"layer by layer, {summary}"
        )
        paths[LAYERS] = save_png(fig, image_path(run_dir, ctx.epoch, LAYERS))
        return paths, sims

    @staticmethod
    def _write_classes(run_dir: Path, names: list[str], palette: np.ndarray, ignore: int) -> None:
        path = run_dir / IMAGES_DIR / CLASSES_FILE
        if path.exists():
            return
        doc = {"class_names": names, "palette": palette.astype(int).tolist(), "ignore_index": ignore}
        with atomic_write(path, "w") as f:
            json.dump(doc, f)


def read_classes(run_dir: str | Path) -> dict[str, Any] | None:
    """``classes.json`` of a run folder (written by :class:`EpochImages`), or None."""
    path = Path(run_dir) / IMAGES_DIR / CLASSES_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


__all__ = [
    "EpochImages",
    "LayerRow",
    "colorize",
    "fixed_indices",
    "image_path",
    "latest_images",
    "layer_rows",
    "layers_figure",
    "prediction_figure",
    "read_classes",
    "run_model",
    "save_png",
    "site_similarity",
]
