"""kdseg's online-KD training step against a minimal hand-written PyTorch loop with the same math.

Same models (UNet-ResNet34 teacher, UNet-ResNet18 student), same batch, same losses (CE for both,
(1-alpha) CE + alpha T^2 KL for the student), same AdamW optimisers. The two are timed in
alternating rounds in one process so that machine noise hits both alike. Prints a table and one
JSON line; the target is ratio <= 1.05.

A second table times the distillation objective alone (forward + backward on random logits of the
same size) in the case where terms share a softmax: mutual mode with the teacher-entropy term.
``separate`` calls ``student_loss`` then ``teacher_loss`` (each computes its own
``log_softmax(logits / T)``: 5 per batch, two host syncs), ``step_loss`` is what ``train_kd`` calls
(one per network: 2 per batch, one sync).

    python benchmarks/kd_step.py [--size 128x128] [--batch 8] [--steps 10] [--rounds 5] [--device cpu]
        [--channels-last]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from _common import emit, machine_info, print_machine


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


def time_objective(args, h: int, w: int) -> dict[str, float]:
    """Median ms of the mutual + entropy objective, forward + backward: separate calls vs step_loss."""
    from kdseg.config import DistillConfig
    from kdseg.distill import KDObjective

    obj = KDObjective(DistillConfig(mode="mutual", temperature=4.0, alpha=0.5, teacher_entropy=0.1), 13, 255)
    torch.manual_seed(0)
    s0 = torch.randn(args.batch, 13, h, w, device=args.device)
    t0 = torch.randn(args.batch, 13, h, w, device=args.device)
    y = torch.randint(0, 13, (args.batch, h, w), device=args.device)

    def separate():
        s, t = s0.clone().requires_grad_(), t0.clone().requires_grad_()
        ls, _ = obj.student_loss(s, None, t, None, y)
        lt, _ = obj.teacher_loss(t, y, s)
        (ls + lt).backward()

    def shared():
        s, t = s0.clone().requires_grad_(), t0.clone().requires_grad_()
        loss, _ = obj.step_loss(s, None, t, None, y, student_learns=True, teacher_learns=True)
        loss.backward()

    out: dict[str, list[float]] = {"separate": [], "step_loss": []}
    for fn in (separate, shared):
        fn()
    for _ in range(args.rounds):
        for name, fn in (("separate", separate), ("step_loss", shared)):
            sync(args.device)
            t = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync(args.device)
            out[name].append((time.perf_counter() - t) / args.steps * 1e3)
    return {k: statistics.median(v) for k, v in out.items()}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="128x128")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median round is reported")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--channels-last", action="store_true", help="kdseg with train.channels_last (both loops NHWC)"
    )
    p.add_argument(
        "--optimizer-in-backward",
        action="store_true",
        help="kdseg with train.optimizer_in_backward (each bucket of parameters updated inside backward)",
    )
    args = p.parse_args()
    machine = machine_info(args.device)
    print_machine(machine)
    h, w = (int(v) for v in args.size.split("x"))

    from kdseg.config import KDConfig
    from kdseg.distill import phase_for
    from kdseg.models import build_model
    from kdseg.train import make_accelerator
    from kdseg.train.setup import Models, build_optimizer
    from kdseg.train.step import steps_in_backward, train_step

    cfg = KDConfig.model_validate(
        {
            "data": {"image_size": [h, w]},
            "train": {
                "batch_size": args.batch,
                "device": args.device,
                "amp": "off",
                "channels_last": args.channels_last,
                "optimizer_in_backward": args.optimizer_in_backward,
            },
            "distill": {"mode": "online", "temperature": 4.0, "alpha": 0.5, "sites": ["logits"]},
        }
    )
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, h, w, device=args.device)
    y = torch.randint(0, 13, (args.batch, h, w), device=args.device)

    # kdseg: the real step function of train_kd, with its accelerator, taps and objective
    accelerator = make_accelerator(cfg)
    m = Models(cfg, 13, 255)
    if args.channels_last:  # as train_kd does
        m.student.to(memory_format=torch.channels_last)
        m.teacher.to(memory_format=torch.channels_last)
    opt_s = build_optimizer("adamw", [*m.student.parameters(), *m.objective.parameters()], 1e-3, 1e-4)
    opt_t = build_optimizer("adamw", m.teacher.parameters(), 1e-3, 1e-4)
    student, teacher = accelerator.prepare(m.student), accelerator.prepare(m.teacher)
    objective = m.objective.to(accelerator.device)
    opt_s, opt_t = accelerator.prepare(opt_s, opt_t)
    steps_in_backward(accelerator, cfg.train, (opt_s, opt_t))  # as train_kd does: each update inside backward
    phase = phase_for("none", 0, 0, True, mode="online")

    def kdseg_step():
        train_step(accelerator, m, student, teacher, objective, opt_s, opt_t, x, y, phase, cfg.train)

    # reference: fresh copies of the same architectures, plain modules and optimisers
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    ref_t = build_model(cfg.teacher, 13).to(args.device, memory_format=fmt).train()
    ref_s = build_model(cfg.student, 13).to(args.device, memory_format=fmt).train()
    ref_ot = torch.optim.AdamW(ref_t.parameters(), lr=1e-3, weight_decay=1e-4)
    ref_os = torch.optim.AdamW(ref_s.parameters(), lr=1e-3, weight_decay=1e-4)

    def ref_step():
        hand_written(ref_t, ref_s, ref_ot, ref_os, x.contiguous(memory_format=fmt), y, 4.0, 0.5)

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
    print(
        f"online KD step, UNet r34 -> r18, batch {args.batch} at {h}x{w}, {args.device} "
        f"({torch.get_num_threads()} threads)"
    )
    print(f"{'loop':<14}{'ms/step (median)':>18}{'images/s':>12}")
    for name, v in (("kdseg", k), ("hand_written", r)):
        print(f"{name:<14}{v * 1e3:>18.1f}{args.batch / v:>12.1f}")
    print(
        f"ratio kdseg / hand-written: {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})"
    )
    obj_ms = time_objective(args, h, w)
    print(
        f"\nobjective alone, mutual + teacher entropy, forward + backward on [{args.batch}, 13, {h}, {w}] logits"
    )
    print(f"{'objective':<28}{'ms (median)':>12}")
    print(f"{'student_loss + teacher_loss':<28}{obj_ms['separate']:>12.2f}")
    print(f"{'step_loss (shared softmax)':<28}{obj_ms['step_loss']:>12.2f}")
    emit(
        {
            "benchmark": "kd_step",
            "command": " ".join(["python", "benchmarks/kd_step.py", *sys.argv[1:]]),
            "machine": machine,
            "device": args.device,
            "size": [h, w],
            "batch": args.batch,
            "channels_last": args.channels_last,
            "optimizer_in_backward": args.optimizer_in_backward,
            "kdseg_ms": k * 1e3,
            "hand_written_ms": r * 1e3,
            "ratio": ratio,
            "target": 1.05,
            "target_met": ratio <= 1.05,
            "rounds_ms": {n: [v * 1e3 for v in t] for n, t in times.items()},
            "objective_mutual_entropy_ms": obj_ms,
        }
    )


if __name__ == "__main__":
    main()
