"""Inference cost of a config's teacher and student under each execution variant.

Runs :func:`kdseg.deploy.bench.bench_config` for fp32, channels_last and bf16 (autocast) and prints the
machine, one table row per (variant, role) and one JSON line. Models have random weights (speed does not
depend on them; nothing is downloaded). ``kdseg bench`` is the same measurement for one variant.

    python benchmarks/inference.py experiments/carla_online_r34_r18.yaml [--size 512x512] [--batch 1]
        [--device auto|cpu|cuda] [--warmup 5] [--iters 20] [--variants fp32,channels_last,bf16]
"""

from __future__ import annotations

import argparse

from _common import emit, machine_info, print_machine, table

from kdseg.cli.bench import parse_size  # refuses sizes that are not multiples of 32
from kdseg.config import load_config
from kdseg.deploy.bench import FLOPS_NOTE, bench_config

VARIANTS = {
    "fp32": {"channels_last": False, "bf16": False},
    "channels_last": {"channels_last": True, "bf16": False},
    "bf16": {"channels_last": False, "bf16": True},
    "channels_last+bf16": {"channels_last": True, "bf16": True},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--size", type=parse_size)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--variants", default="fp32,channels_last,bf16", help=f"from {', '.join(VARIANTS)}")
    args = p.parse_args()
    cfg = load_config(args.config)

    results = {}
    for name in args.variants.split(","):
        results[name] = bench_config(
            cfg, args.size, args.batch, args.device, warmup=args.warmup, iters=args.iters, **VARIANTS[name]
        )

    first = next(iter(results.values()))
    h, w = first["size"]
    machine = machine_info(first["device"])
    print_machine(machine)
    table(
        ["variant", "role", "model", "GFLOPs", "p50 ms", "p95 ms", "img/s"],
        [
            [name, role, r[role]["model"], r[role]["gflops"], r[role]["latency_ms_p50"]]
            + [r[role]["latency_ms_p95"], r[role]["images_per_s"]]
            for name, r in results.items()
            for role in ("teacher", "student")
            if role in r
        ],
        f"{cfg.name}: {h}x{w}, batch {args.batch}, {first['device']} ({first['device_name']})",
    )
    print(FLOPS_NOTE)
    summary = {
        name: {
            role: {k: r[role][k] for k in ("latency_ms_p50", "images_per_s")}
            for role in ("teacher", "student")
            if role in r
        }
        for name, r in results.items()
    }
    emit(
        {
            "benchmark": "inference",
            "machine": machine,
            "config": cfg.name,
            "size": [h, w],
            "batch": args.batch,
            "results": summary,
        }
    )


if __name__ == "__main__":
    main()
