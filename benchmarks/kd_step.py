"""kdseg's online-KD training step against a minimal hand-written PyTorch loop with the same math.

Same models (UNet-ResNet34 teacher, UNet-ResNet18 student), same batch, same losses (CE for both,
(1-alpha) CE + alpha T^2 KL for the student), same AdamW optimisers. The two are timed in
alternating rounds in one process so that machine noise hits both alike. Prints a table and one
JSON line; the target is ratio <= 1.05.

    python benchmarks/kd_step.py [--size 128x128] [--batch 8] [--steps 10] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F


def hand_written(teacher, student, opt_t, opt_s, x, y, T: float, alpha: float):
    """The reference: what a person would write by hand for one online-KD step."""
    t_logits = teacher(x)
    s_logits = student(x)
    loss_t = F.cross_entropy(t_logits, y, ignore_index=255)
    log_q = F.log_softmax(s_logits / T, dim=1)
    log_p = F.log_softmax(t_logits.detach() / T, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1).mean() * T * T
    loss_s = (1 - alpha) * F.cross_entropy(s_logits, y, ignore_index=255) + alpha * kl
    opt_t.zero_grad(set_to_none=True)
    opt_s.zero_grad(set_to_none=True)
    (loss_t + loss_s).backward()
    opt_t.step()
    opt_s.step()
    return loss_s.item()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="128x128")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))

    from kdseg.config import KDConfig
    from kdseg.distill import phase_for
    from kdseg.models import build_model
    from kdseg.train import _Models, _optimizer, _train_step, make_accelerator

    cfg = KDConfig.model_validate(
        {
            "data": {"image_size": [h, w]},
            "train": {"batch_size": args.batch, "device": args.device, "amp": "off"},
            "distill": {"mode": "online", "temperature": 4.0, "alpha": 0.5, "sites": ["logits"]},
        }
    )
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, h, w, device=args.device)
    y = torch.randint(0, 13, (args.batch, h, w), device=args.device)

    # kdseg: the real step function of train_kd, with its accelerator, taps and objective
    accelerator = make_accelerator(cfg)
    m = _Models(cfg, 13, 255)
    opt_s = _optimizer("adamw", [*m.student.parameters(), *m.objective.parameters()], 1e-3, 1e-4)
    opt_t = _optimizer("adamw", m.teacher.parameters(), 1e-3, 1e-4)
    student, teacher = accelerator.prepare(m.student), accelerator.prepare(m.teacher)
    objective = m.objective.to(accelerator.device)
    opt_s, opt_t = accelerator.prepare(opt_s, opt_t)
    phase = phase_for("none", 0, 0, True, mode="online")

    def kdseg_step():
        _train_step(accelerator, m, student, teacher, objective, opt_s, opt_t, x, y, phase, cfg.train)

    # reference: fresh copies of the same architectures, plain modules and optimisers
    ref_t = build_model(cfg.teacher, 13).to(args.device).train()
    ref_s = build_model(cfg.student, 13).to(args.device).train()
    ref_ot = torch.optim.AdamW(ref_t.parameters(), lr=1e-3, weight_decay=1e-4)
    ref_os = torch.optim.AdamW(ref_s.parameters(), lr=1e-3, weight_decay=1e-4)

    def ref_step():
        hand_written(ref_t, ref_s, ref_ot, ref_os, x, y, 4.0, 0.5)

    for fn in (kdseg_step, ref_step):  # warm up (allocator, kernels)
        for _ in range(2):
            fn()
    sync(args.device)

    times = {"kdseg": [], "hand_written": []}
    for _ in range(args.rounds):
        for name, fn in (("kdseg", kdseg_step), ("hand_written", ref_step)):
            sync(args.device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync(args.device)
            times[name].append((time.perf_counter() - t0) / args.steps)

    k, r = statistics.median(times["kdseg"]), statistics.median(times["hand_written"])
    ratio = k / r
    print(f"online KD step, UNet r34 -> r18, batch {args.batch} at {h}x{w}, {args.device} "
          f"({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})")
    print(f"{'loop':<14}{'ms/step (median)':>18}{'images/s':>12}")
    for name, v in (("kdseg", k), ("hand_written", r)):
        print(f"{name:<14}{v * 1e3:>18.1f}{args.batch / v:>12.1f}")
    print(f"ratio kdseg / hand-written: {ratio:.3f} (target <= 1.05)")
    print(json.dumps({
        "benchmark": "kd_step", "device": args.device, "size": [h, w], "batch": args.batch,
        "kdseg_ms": round(k * 1e3, 2), "hand_written_ms": round(r * 1e3, 2), "ratio": round(ratio, 4),
        "rounds_ms": {n: [round(v * 1e3, 2) for v in t] for n, t in times.items()},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
