"""Online-KD training throughput on a GPU: precision and memory-format variants, and fractional trials.

Part 1, variants: kdseg's training step (``kdseg.train.step.train_step``: UNet-ResNet34 teacher and
UNet-ResNet18 student learning together, CE + T^2 KL) at ``--size`` (512x512), batch ``--batch``,
images/s for

- ``fp32``: no autocast;
- ``bf16``: bf16 autocast (``train.amp: bf16``);
- ``bf16+cl``: plus ``train.channels_last``;
- ``bf16+cl+compile``: plus ``torch.compile`` of both networks (default on CUDA only: inductor's
  CPU compile takes minutes).

Part 2, fractional trials: 1, 2 and 4 processes (what Ray Tune runs for ``resources_per_trial:
{gpu: 1/k}``) each running the step (variant ``--frac-variant``) on the same GPU at once, started
together behind a barrier; aggregate images/s = sum over processes.

Without a CUDA device it prints "no CUDA device" and a JSON line with ``"skipped"`` and exits 0;
``--device cpu`` runs the same code on the CPU instead (use a small ``--size``, e.g. 64x64).

    python benchmarks/gpu.py [--size 512x512] [--batch 8] [--steps 20] [--fractional 1,2,4]
    python benchmarks/gpu.py --device cpu --size 64x64 --batch 2 --steps 2 --fractional 1,2   # the same code on CPU

Prints tables, the machine (GPU, CPU, torch) and its load, and one JSON line ``{"benchmark": "gpu", ...}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from _common import emit, machine_info, parse_size, print_machine, table

VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"amp": "off", "channels_last": False, "compile": False},
    "bf16": {"amp": "bf16", "channels_last": False, "compile": False},
    "bf16+cl": {"amp": "bf16", "channels_last": True, "compile": False},
    "bf16+cl+compile": {"amp": "bf16", "channels_last": True, "compile": True},
}


def build_step(device: str, size: tuple[int, int], batch: int, variant: str, teacher: str, student: str):
    """kdseg's step for one variant; returns (step, sync) on a fixed random batch."""
    import torch

    from kdseg.config import KDConfig
    from kdseg.distill import phase_for
    from kdseg.train import make_accelerator
    from kdseg.train.setup import Models, build_optimizer
    from kdseg.train.step import train_step

    v = VARIANTS[variant]
    h, w = size
    cfg = KDConfig.model_validate(
        {
            "data": {"image_size": [h, w]},
            "teacher": {"arch": "Unet", "encoder": teacher},
            "student": {"arch": "Unet", "encoder": student},
            "distill": {"mode": "online", "temperature": 4.0, "alpha": 0.5, "sites": ["logits"]},
            "train": {
                "batch_size": batch,
                "device": device,
                "amp": v["amp"],
                "channels_last": v["channels_last"],
            },
        }
    )
    torch.manual_seed(0)
    acc = make_accelerator(cfg)
    m = Models(cfg, 13, 255)
    if v["channels_last"]:  # as train_kd does
        m.student.to(memory_format=torch.channels_last)
        m.teacher.to(memory_format=torch.channels_last)
    opt_s = build_optimizer("adamw", [*m.student.parameters(), *m.objective.parameters()], 1e-3, 1e-4)
    opt_t = build_optimizer("adamw", m.teacher.parameters(), 1e-3, 1e-4)
    s_net, t_net = acc.prepare(m.student), acc.prepare(m.teacher)
    if v["compile"]:
        s_net, t_net = torch.compile(s_net), torch.compile(t_net)
    objective = m.objective.to(acc.device)
    opt_s, opt_t = acc.prepare(opt_s, opt_t)
    phase = phase_for("none", 0, 0, True, mode="online")
    x = torch.randn(batch, 3, h, w, device=acc.device)
    y = torch.randint(0, 13, (batch, h, w), device=acc.device)

    def step() -> None:
        train_step(acc, m, s_net, t_net, objective, opt_s, opt_t, x, y, phase, cfg.train)

    def sync() -> None:
        if acc.device.type == "cuda":
            torch.cuda.synchronize()

    return step, sync


def time_steps(step, sync, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return times


def part_variants(args) -> list[dict[str, Any]]:
    import torch

    rows = []
    for name in args.variants:
        if args.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            step, sync = build_step(args.device, args.size, args.batch, name, args.teacher, args.student)
            times = time_steps(step, sync, args.warmup, args.steps)
        except Exception as e:  # one variant failing (e.g. no compiler for inductor) is a row, not a crash
            rows.append({"variant": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
            continue
        med = statistics.median(times)
        row = {
            "variant": name,
            **VARIANTS[name],
            "step_ms_median": med * 1e3,
            "images_per_s": args.batch / med,
            "setup_and_warmup_s": time.perf_counter() - t0 - sum(times),
        }
        if args.device == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        rows.append(row)
        del step, sync
    base = next((r for r in rows if r["variant"] == "fp32" and "images_per_s" in r), None)
    for r in rows:
        if base and "images_per_s" in r:
            r["speedup_vs_fp32"] = r["images_per_s"] / base["images_per_s"]
    return rows


def _worker(args_dict: dict, barrier, queue) -> None:
    """One fractional trial: build, warm up, wait for the others, run ``steps`` steps."""
    import threading

    try:
        import torch

        if args_dict["device"] == "cpu":
            torch.set_num_threads(args_dict["threads"])
        step, sync = build_step(
            args_dict["device"],
            tuple(args_dict["size"]),
            args_dict["batch"],
            args_dict["variant"],
            args_dict["teacher"],
            args_dict["student"],
        )
        for _ in range(args_dict["warmup"]):
            step()
        sync()
        barrier.wait()
        t = time.perf_counter()
        for _ in range(args_dict["steps"]):
            step()
        sync()
        seconds = time.perf_counter() - t
        queue.put({"pid": os.getpid(), "seconds": seconds, "images": args_dict["steps"] * args_dict["batch"]})
    except threading.BrokenBarrierError:
        queue.put({"pid": os.getpid(), "error": "another fractional trial failed"})
    except Exception as e:
        barrier.abort()  # the others must not wait for this one
        queue.put({"pid": os.getpid(), "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})


def part_fractional(args) -> list[dict[str, Any]]:
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")
    rows = []
    for k in args.fractional:
        barrier, queue = ctx.Barrier(k), ctx.Queue()
        spec = {
            "device": args.device,
            "size": list(args.size),
            "batch": args.batch,
            "variant": args.frac_variant,
            "teacher": args.teacher,
            "student": args.student,
            "warmup": args.warmup,
            "steps": args.steps,
            "threads": max(1, (os.cpu_count() or 1) // k),
        }
        procs = [ctx.Process(target=_worker, args=(spec, barrier, queue)) for _ in range(k)]
        for p in procs:
            p.start()
        results: list[dict[str, Any]] = []
        deadline = time.time() + args.frac_timeout
        while len(results) < k and time.time() < deadline:
            try:
                results.append(queue.get(timeout=1.0))
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs):  # died without a word (killed, OOM)
                    break
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        errors = [r["error"] for r in results if "error" in r]
        ok = [r for r in results if "error" not in r]
        if errors or len(ok) < k:
            rows.append(
                {"trials": k, "error": errors[0] if errors else f"{k - len(ok)} trial(s) gave no result"}
            )
            continue
        per = [r["images"] / r["seconds"] for r in ok]
        rows.append(
            {
                "trials": k,
                "aggregate_images_per_s": sum(per),
                "per_trial_images_per_s": statistics.mean(per),
                "slowest_trial_s": max(r["seconds"] for r in ok),
            }
        )
    one = next((r for r in rows if r["trials"] == 1 and "error" not in r), None)
    for r in rows:
        if one and "error" not in r:
            r["aggregate_vs_1"] = r["aggregate_images_per_s"] / one["aggregate_images_per_s"]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default; skipped when absent) or cpu")
    p.add_argument("--size", type=parse_size, default=(512, 512))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant and per fractional trial")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--teacher", default="resnet34")
    p.add_argument("--student", default="resnet18")
    p.add_argument("--variants", default=None, help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--fractional", default="1,2,4", help="concurrent trials on one device ('' to skip)")
    p.add_argument("--frac-variant", default="bf16+cl", choices=list(VARIANTS))
    p.add_argument("--frac-timeout", type=float, default=600.0)
    args = p.parse_args()
    args.fractional = [int(v) for v in args.fractional.split(",") if v.strip()]
    default_variants = list(VARIANTS) if args.device == "cuda" else ["fp32", "bf16", "bf16+cl"]
    args.variants = args.variants.split(",") if args.variants else default_variants
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")

    import torch

    os.environ.setdefault("WANDB_MODE", "disabled")
    machine = machine_info(args.device)
    print_machine(machine)
    report: dict[str, Any] = {
        "benchmark": "gpu",
        "command": " ".join(["python", "benchmarks/gpu.py", *sys.argv[1:]]),
        "machine": machine,
        "device": args.device,
    }
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped (pass --device cpu to run the same code on the CPU at a small --size)")
        report["skipped"] = "no CUDA device"
        emit(report)
        return
    started = time.perf_counter()
    h, w = args.size
    print(
        f"online KD step, UNet {args.teacher} -> {args.student}, batch {args.batch} at {h}x{w}, "
        f"{args.steps} timed steps after {args.warmup} warm-up",
        flush=True,
    )
    variants = part_variants(args)
    table(
        ["variant", "ms/step", "images/s", "x fp32", "peak GiB", "setup s", "error"],
        [
            [
                r["variant"],
                r.get("step_ms_median"),
                r.get("images_per_s"),
                r.get("speedup_vs_fp32"),
                r.get("peak_memory_gib"),
                r.get("setup_and_warmup_s"),
                r.get("error"),
            ]
            for r in variants
        ],
        "Variants (one trial)",
    )
    fractional = part_fractional(args) if args.fractional else []
    if fractional:
        table(
            ["trials", "aggregate images/s", "per trial", "aggregate / 1 trial", "error"],
            [
                [
                    r["trials"],
                    r.get("aggregate_images_per_s"),
                    r.get("per_trial_images_per_s"),
                    r.get("aggregate_vs_1"),
                    r.get("error"),
                ]
                for r in fractional
            ],
            f"Fractional trials sharing one {args.device} device (variant {args.frac_variant})",
        )
    report.update(
        {
            "size": [h, w],
            "batch": args.batch,
            "teacher": args.teacher,
            "student": args.student,
            "variants": variants,
            "fractional": fractional,
            "summary": {
                "images_per_s": {r["variant"]: r.get("images_per_s") for r in variants},
                "fractional_aggregate_images_per_s": {
                    str(r["trials"]): r.get("aggregate_images_per_s") for r in fractional
                },
            },
            "total_s": time.perf_counter() - started,
        }
    )
    emit(report)


if __name__ == "__main__":
    main()
