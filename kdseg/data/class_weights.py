"""Class weights for the hard (cross-entropy) loss, from the training split's pixel counts.

``data.class_weights`` picks the method; with ``n_c`` the labelled training pixels of class ``c``
(``ignore_index`` excluded; :meth:`kdseg.data.SegData.class_pixels`), ``f_c = n_c / sum(n)`` its
frequency and ``K`` the number of classes present in the training labels (``n_c > 0``):

- ``none``: no weights (plain CE);
- ``inverse``: ``w_c = 1 / (K * f_c)``, so ``sum_c f_c w_c = 1`` (the weighted average over
  pixels stays 1; scikit-learn's "balanced" weights);
- ``median_frequency``: ``w_c = median_{present}(f) / f_c`` (Eigen & Fergus, 2015), so a class of
  median frequency weighs 1.

A class absent from the training labels (``n_c = 0``) gets ``ABSENT_WEIGHT = 1.0``: no training
pixel carries it, so its weight never enters the loss; it is finite so that the weights can be
printed, plotted and logged. Weights are never inf or NaN. A training split with no labelled pixel
at all gets all ones.

The counts are computed once, while :func:`~kdseg.data.load_data` decodes the label files (at
their native resolution), and are kept in memory on the :class:`~kdseg.data.SegData`; a sweep's
trials share that object, so nothing is recounted and nothing is cached on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("none", "inverse", "median_frequency")
ABSENT_WEIGHT = 1.0


def compute_class_weights(counts: np.ndarray, method: str) -> np.ndarray | None:
    """float32 ``[C]`` weights from per-class pixel counts (module docstring); None for ``none``."""
    if method not in METHODS:
        raise ValueError(f"unknown class weighting {method!r}; known: {', '.join(METHODS)}")
    if method == "none":
        return None
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative pixel counts")
    weights = np.full(counts.shape, ABSENT_WEIGHT, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return weights.astype(np.float32)
    freq = counts[present] / counts.sum()
    if method == "inverse":
        weights[present] = 1.0 / (present.sum() * freq)
    else:  # median_frequency
        weights[present] = np.median(freq) / freq
    return weights.astype(np.float32)


def class_weights_for(data: Any, method: str) -> np.ndarray | None:
    """The weights of ``data`` (a :class:`~kdseg.data.SegData`) by ``method``; None for ``none``."""
    if method == "none":
        return None
    return compute_class_weights(data.class_pixels(), method)


def class_stats(data: Any) -> list[dict[str, Any]]:
    """One row per class: ``id, name, pixels, frequency`` and the weight of every method."""
    counts = data.class_pixels()
    total = int(counts.sum())
    by_method = {m: compute_class_weights(counts, m) for m in METHODS if m != "none"}
    rows = []
    for c in range(data.num_classes):
        row: dict[str, Any] = {
            "id": c,
            "name": data.class_names[c] if c < len(data.class_names) else f"class_{c}",
            "pixels": int(counts[c]),
            "frequency": counts[c] / total if total else 0.0,
        }
        row.update({m: float(w[c]) for m, w in by_method.items()})
        rows.append(row)
    return rows


def plot_class_stats(rows: list[dict[str, Any]], path, title: str = "", highlight: str = "none") -> Path:
    """A PNG of the class frequencies and the weights of each method (Agg canvas, log scales)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from kdseg.fileio import atomic_write

    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(6.0, 0.45 * len(rows) + 2), 6.5), dpi=110)
    FigureCanvasAgg(fig)
    ax_f, ax_w = fig.subplots(2, 1, sharex=True)
    freq = np.array([r["frequency"] for r in rows], dtype=float)
    ax_f.bar(x, np.where(freq > 0, freq, np.nan), color="#4c72b0")
    ax_f.set_yscale("log")
    ax_f.set_ylabel("pixel frequency (train)")
    ax_f.set_title(title or "class frequencies and weights")
    for i in np.flatnonzero(freq == 0):
        ax_f.annotate("absent", (i, 0.5), xycoords=("data", "axes fraction"), ha="center", rotation=90)
    methods = [m for m in METHODS if m != "none"]
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        chosen = m == highlight
        ax_w.bar(
            x - 0.4 + width * (k + 0.5),
            [r[m] for r in rows],
            width,
            label=m + (" (configured)" if chosen else ""),
            edgecolor="black" if chosen else None,
        )
    ax_w.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax_w.set_yscale("log")
    ax_w.set_ylabel("CE weight")
    ax_w.legend()
    ax_w.set_xticks(x, names, rotation=60, ha="right")
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def class_table(rows: list[dict[str, Any]], configured: str = "none", title: str | None = None):
    """A rich Table of :func:`class_stats` rows; the configured method's column is bold."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("class")
    table.add_column("train pixels", justify="right")
    table.add_column("frequency", justify="right")
    for m in METHODS[1:]:
        label = f"{m} *" if m == configured else m
        table.add_column(label, justify="right", style="bold" if m == configured else None)
    for r in rows:
        freq = f"{r['frequency']:.4%}" if r["pixels"] else "absent"
        table.add_row(
            str(r["id"]), r["name"], f"{r['pixels']:,}", freq, *(f"{r[m]:.3f}" for m in METHODS[1:])
        )
    note = "* = data.class_weights of this config" if configured != "none" else "data.class_weights: none"
    table.caption = f"{note}; a class absent from train gets weight {ABSENT_WEIGHT:g} (never used)"
    return table
