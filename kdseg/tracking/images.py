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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdseg.config import SITES
from kdseg.fileio import atomic_write
from kdseg.layout import CLASSES_FILE, IMAGES_DIR
from kdseg.tracking.mosaic import save_png
from kdseg.tracking.panels import (
    layer_rows,
    layers_figure,
    prediction_figure,
    prepare_batch,
    run_model,
    site_similarity,
)

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
LAYERS = "layers"

ImageSink = Callable[[int, dict[str, Path]], None]


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


__all__ = ["EpochImages", "fixed_indices", "image_path", "latest_images", "read_classes"]
