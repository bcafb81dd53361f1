"""``kdseg bench CONFIG``: the parser, the command, its table."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    pass
from kdseg.deploy.bench import _check_size, bench_config
from kdseg.deploy.profile import FLOPS_NOTE, resolve_device

# ------------------------------------------------------------------------------------ command


def parse_size(text: str) -> tuple[int, int]:
    """``"512x512"`` -> ``(512, 512)`` for argparse."""
    try:
        h, w = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW like 512x512, got {text!r}") from None
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"size {text!r}: H and W must be multiples of 32 (at least 32)")
    return h, w


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {v}")
    return v


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def add_bench_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``kdseg bench`` on an argparse subparsers object; returns the new parser."""
    b = sub.add_parser(
        "bench",
        help="parameters, FLOPs, latency and throughput of a config's teacher and student",
        description="Profile the teacher and student of a training config (random weights: no download). "
        + FLOPS_NOTE
        + "; latency per batch after warm-up, CUDA synchronised.",
    )
    b.add_argument("config", help="training config YAML (see experiments/)")
    b.add_argument("--size", type=parse_size, help="input HxW (default: the config's data.image_size)")
    b.add_argument("--batch", type=_positive_int, default=1, help="batch size (default 1)")
    b.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="default: cuda if available, else cpu",
    )
    b.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    b.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    b.add_argument("--warmup", type=_non_negative_int, default=5, help="untimed forwards first (default 5)")
    b.add_argument("--iters", type=_positive_int, default=20, help="timed forwards (default 20)")
    b.add_argument(
        "--json", dest="json_path", help="JSON output file (default: ./bench-<config file stem>.json)"
    )
    b.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config key (repeatable), e.g. --set student.arch=lightweight_unet",
    )
    b.set_defaults(func=cmd_bench)
    return b


def render_bench(result: Mapping[str, Any]) -> Any:
    """A rich Table of a :func:`bench_config` result (settings in the title)."""
    from rich.table import Table

    h, w = result["size"]
    title = (
        f"{result.get('config') or 'bench'}: {h}x{w}, batch {result['batch']}, {result['device']}, "
        f"{result['dtype']}" + (", channels_last" if result.get("channels_last") else "")
    )
    t = Table(title=title, title_justify="left")
    cuda = str(result["device"]).startswith("cuda")
    for col in ("role", "model", "params M", "GFLOPs", "p50 ms", "p95 ms", "images/s"):
        t.add_column(col, justify="left" if col in ("role", "model") else "right")
    if cuda:
        t.add_column("peak MiB", justify="right")
    for role in ("teacher", "student"):
        r = result.get(role)
        if r is None:
            continue
        cells = [
            role,
            r["model"],
            f"{r['params'] / 1e6:.2f}",
            f"{r['gflops']:.2f}",
            f"{r['latency_ms_p50']:.1f}",
            f"{r['latency_ms_p95']:.1f}",
            f"{r['images_per_s']:.2f}",
        ]
        if cuda:
            cells.append(f"{r['peak_mem_mib']:.0f}" if r.get("peak_mem_mib") is not None else "-")
        t.add_row(*cells)
    return t


def bench_summary(result: Mapping[str, Any]) -> list[str]:
    """The lines printed under the table: machine, ratios, how FLOPs and latency are measured."""
    first = result.get("student") or {}
    lines = [
        f"device: {result.get('device_name') or result['device']}"
        + (f", {result['threads']} torch threads" if result.get("threads") else "")
        + f", torch {result.get('torch')}; latency per batch over {first.get('iters', '?')} runs "
        f"after {first.get('warmup', '?')} warm-up runs"
        + (
            f", teacher and student alternating in {result['rounds']} rounds"
            if result.get("rounds") and "teacher" in result
            else ""
        )
    ]
    ratio = result.get("teacher_over_student")
    if ratio:
        lines.append(
            f"teacher / student: {ratio['params']:.2f}x params, "
            + (f"{ratio['gflops']:.2f}x GFLOPs, " if ratio.get("gflops") else "")
            + f"{ratio['latency_p50']:.2f}x p50 latency"
        )
    lines.append(FLOPS_NOTE)
    return lines


def cmd_bench(args: argparse.Namespace) -> int:
    """``kdseg bench CONFIG.yaml``: profile, print the table, write the JSON file."""
    from rich.console import Console

    from kdseg.config import load_config
    from kdseg.fileio import atomic_write, require_writable

    cfg = load_config(args.config, getattr(args, "overrides", []) or [])
    default = Path(f"bench-{Path(args.config).stem}.json")
    json_path = Path(args.json_path) if getattr(args, "json_path", None) else default
    require_writable(json_path.parent, "benchmark JSON")
    size = args.size if getattr(args, "size", None) else None
    _check_size(size if size is not None else cfg.data.image_size, "--size" if size else "data.image_size")
    resolve_device(getattr(args, "device", "auto"))  # fail before building anything

    err = Console(stderr=True)
    with err.status("profiling ...") as status:

        def on_model(role: str, label: str) -> None:
            status.update(f"profiling the {role} ({label}) ...")

        result = bench_config(
            cfg,
            size=size,
            batch=args.batch,
            device=getattr(args, "device", "auto"),
            channels_last=getattr(args, "channels_last", False),
            bf16=getattr(args, "bf16", False),
            warmup=getattr(args, "warmup", 5),
            iters=getattr(args, "iters", 20),
            on_model=on_model,
        )
    result["config_file"] = str(Path(args.config).resolve())
    with atomic_write(json_path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    console.print(render_bench(result))
    for line in bench_summary(result):
        console.print(line, highlight=False)
    console.print(f"wrote {json_path}", highlight=False)
    return 0
