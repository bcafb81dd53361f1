"""``kdseg data synth`` and ``kdseg data stats``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kdseg.errors import KdsegError
from kdseg.fileio import require_writable


def parse_hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW like 96x128, got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small (at least 8x8)")
    return h, w


# ----------------------------------------------------------------------------------------- data


def cmd_data_synth(args: argparse.Namespace) -> int:
    from kdseg.data import write_synth

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise KdsegError(f"{out}: exists and is not empty; pass --force to overwrite")
    require_writable(out, "run")
    started = time.perf_counter()
    write_synth(out, n=args.n, size=args.size, seed=args.seed, progress=True)
    print(
        f"wrote {args.n} synthetic road scenes ({args.size[0]}x{args.size[1]}, seed {args.seed}) to {out} "
        f"in {time.perf_counter() - started:.1f}s (carla layout: CameraRGB/, CameraSeg/)"
    )
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    import json

    from kdseg.config import load_config

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / "data_stats" / (cfg.name or Path(args.config).stem)
    require_writable(out, "statistics")

    from rich.console import Console

    from kdseg.data import load_data
    from kdseg.data.class_weights import class_stats, class_table, plot_class_stats
    from kdseg.fileio import atomic_write

    data = load_data(cfg.data, progress=True)
    rows = class_stats(data)
    title = f"{data.source}: {len(data.train)} train images, {data.num_classes} classes"
    Console().print(class_table(rows, cfg.data.class_weights, title=title))
    png = plot_class_stats(rows, out / "class_stats.png", title=title, highlight=cfg.data.class_weights)
    with atomic_write(out / "class_stats.json", "w") as f:
        json.dump(
            {"source": data.source, "class_weights": cfg.data.class_weights, "classes": rows}, f, indent=1
        )
    print(f"wrote {png} and {out / 'class_stats.json'}")
    return 0
