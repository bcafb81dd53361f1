"""The two panels of :mod:`kdseg.tracking.images`: running teacher and student on fixed images (with
feature taps), the prediction panel and the layer-by-layer panel with its per-site similarities."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdseg.tracking.mosaic import Mosaic, Tile, class_legend, colorize, norm01, resize_map


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return None if den < 1e-12 else float((a * b).sum() / den)


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
    class_legend(fig, class_names, palette, ignore_index, m.height)
    return fig


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
    vals = [
        c
        for b in range(len(te))
        if (c := _corr(resize_map(te[b], size), resize_map(se[b], size))) is not None
    ]
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
    out = [Tile(norm01(_energy(x)), f"mean|x| {x.shape[0]}ch" + size, "magma")]
    for c in energy.argsort(descending=True)[:3].tolist():
        out.append(Tile(norm01(x[c].numpy()), f"channel {c}", "magma"))
    return out


def _delta_map(row: LayerRow) -> np.ndarray:
    import torch

    t, s = row.teacher[0], row.student[0]
    if row.site == "logits":
        return 0.5 * (torch.softmax(t, 0) - torch.softmax(s, 0)).abs().sum(0).numpy()
    te, se = _energy(t), _energy(s)
    size = max(te.shape, se.shape)
    return np.abs(norm01(resize_map(te, size)) - norm01(resize_map(se, size)))


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
