"""Resident memory of a quickstart sweep trial, stage by stage, and of N such trials at once.

Each trial runs in a fresh process (``--child``) that does what a sweep trial does, in order, and
records its resident memory (RSS) and the peak so far (``VmHWM``, reset between stages) after each:

- ``python``: the interpreter with kdseg's benchmark helpers;
- ``torch``: ``import torch`` (its shared libraries: on a CUDA build of torch the CUDA libraries are
  mapped too, and only the pages touched count);
- ``trial imports``: ``kdseg.sweep.trainable`` and what ``train_kd`` imports (Ray Tune, smp, timm,
  torchvision, accelerate, kdseg's data/models/distill/tracking);
- ``data``: the decoded dataset (``load_data``: here private; in a sweep one copy in Ray's object store
  per node, see ``benchmarks/shared_data_memory.py``);
- ``W&B``: the trial's W&B run opened (``--wandb offline`` starts the wandb-core service process, measured
  apart: it is a separate process);
- ``train``: ``train_kd`` for ``--epochs`` epochs as a sweep trial calls it (scratch checkpoint folder, epoch
  hooks), the models, their optimisers, activations and the checkpoint writes included. Split into
  sub-stages per epoch: ``epoch N: steps + validation`` and ``epoch N: image hook`` (the PNGs that
  ``tracking.wandb.log_images_every`` asks for), then ``after the last hooks`` (the last epoch's checkpoint
  writes, ``train_kd``'s end); ``train``'s peak is the maximum over them. ``train_kd``'s epoch hook ``HardwareMetrics`` resets
  ``VmHWM`` at every epoch's end: without the sub-stages, ``train`` saw only the last epoch's image hook
  and checkpoint writes, never the training steps (the figures before issue 18's mem4 pass).

Tensor sizes are reported beside it: parameters, optimiser state and the dataset's arrays, so that the
training stage can be split into models + optimiser + the rest (activations, autograd, allocator caches).
The quickstart trial: UNet-ResNet34 teacher -> UNet-ResNet18 student, online KD, 64 generated scenes at
64x64, batch 8, no loader workers. ``--concurrent N`` runs N trials at once (N processes; the dataset is
private to each here) and reports each one's peak and the sum of their proportional set sizes (PSS:
shared library pages divided among the processes that map them).

    python benchmarks/trial_memory.py [--size 64x64] [--n 64] [--epochs 2] [--concurrent 1,2]
        [--wandb disabled|offline] [--env MALLOC_ARENA_MAX=2] [--log-images-every N]

Prints a table per stage and one per concurrency, the machine and its load, and one JSON line
``{"benchmark": "trial_memory", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import MB, emit, machine_info, parse_size, print_machine, table

TARGET_MB = 1536  # 1.5 GB per 64x64 trial


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _mapped_groups() -> dict[str, float]:
    """Resident MB of this process by what is mapped: torch's CPU and CUDA libraries, other libraries,
    anonymous memory (heap, tensors) and the rest."""
    groups: dict[str, float] = {}
    name = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and not parts[0].endswith(":"):
                name = parts[5] if len(parts) > 5 else ""
            elif parts[0] == "Rss:":
                groups[_group(name)] = groups.get(_group(name), 0.0) + int(parts[1]) / 1024
    return groups


def _group(path: str) -> str:
    base = os.path.basename(path)
    if not path or path.startswith("["):
        return "anonymous (heap, tensors, stacks)"
    if any(
        k in base
        for k in (
            "cuda",
            "cudnn",
            "cublas",
            "cufft",
            "curand",
            "cusparse",
            "cusolver",
            "nccl",
            "nvrtc",
            "nvJitLink",
            "cupti",
            "nvToolsExt",
            "cufile",
            "triton",
        )
    ):
        return "CUDA libraries"
    if "torch" in path and ".so" in base:
        return "torch CPU libraries"
    if ".so" in base:
        return "other libraries"
    return "other files"


def child(args) -> None:
    """One trial in this (fresh) process; prints one JSON line of stages."""
    stages: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def mark(name: str, **extra) -> None:
        stages.append(
            {
                "stage": name,
                "rss_mb": _status("VmRSS"),
                "peak_mb": _status("VmHWM"),
                "t_s": time.perf_counter() - t0,
                **extra,
            }
        )
        _reset_peak()

    _reset_peak()
    mark("python")
    import torch

    mark("torch", torch_threads=torch.get_num_threads())
    import kdseg.sweep.trainable  # noqa: F401  what a trial's worker imports
    from kdseg.config import validate_config
    from kdseg.data import load_data, write_synth
    from kdseg.train import train_kd

    mark("trial imports")
    work = Path(tempfile.mkdtemp(prefix="kdseg-trial-mem-"))
    h, w = args.size
    root = write_synth(work / "scenes", n=args.n, size=(h, w), seed=0)
    cfg = validate_config(
        {
            "data": {"format": "carla", "root": str(root), "image_size": [h, w], "num_classes": 13},
            "teacher": {"arch": "Unet", "encoder": "resnet34"},
            "student": {"arch": "Unet", "encoder": "resnet18"},
            "distill": {"mode": "online", "temperature": 4.0, "alpha": 0.5, "sites": ["logits"]},
            "train": {
                "epochs": args.epochs,
                "batch_size": 8,
                "num_workers": 0,
                "seed": 0,
                "optimizer_in_backward": args.optimizer_in_backward,
            },
            "tracking": {
                "wandb": {
                    "mode": args.wandb,
                    "project": "kdseg-bench",
                    **({} if args.log_images_every is None else {"log_images_every": args.log_images_every}),
                }
            },
        }
    )
    data = load_data(cfg.data)
    arrays = [a for sp in (data.train, data.val) for a in (sp.images, sp.masks)]
    mark("data", data_arrays_mb=sum(a.nbytes for a in arrays) / MB)

    from kdseg.tracking.run import WandbRun

    sizes: dict[str, float] = {}
    for k in range(args.trials_per_process):  # a reused Ray actor runs trial after trial in one process
        run_dir = work / f"trial{k}" / "run"
        wb = WandbRun(
            cfg, run_dir, group="trial-memory", name=f"t{k}", job_type="sweep-trial", wandb_dir=run_dir.parent
        )
        with wb:
            if k == 0:
                mark("W&B", wandb_service_mb=_children_rss())
            seen_models: dict[str, Any] = {}

            def size_hook(ctx, seen_models=seen_models) -> None:
                seen_models["student"] = ctx.student
                seen_models["teacher"] = ctx.teacher

            hooks = [size_hook, *_epoch_hooks(wb.hooks, stages, k, t0)]
            kwargs: dict[str, Any] = {
                "run_dir": run_dir,
                "hooks": hooks,
                "keep_last_checkpoint": False,
            }
            accepts = _train_kd_parameters()
            if "save_checkpoint" in accepts:  # a sweep trial: epoch-named files in run/, pointers to Tune
                from kdseg.checkpoint import save_epoch_checkpoint

                kwargs["save_checkpoint"] = lambda state, epoch, d=run_dir: save_epoch_checkpoint(
                    state, d, epoch
                )
            elif "checkpoint_dir" in accepts:  # a tree before pointers: the scratch folder Tune copied
                kwargs["checkpoint_dir"] = work / f"scratch{k}"
            train_kd(cfg, data, lambda m, c: None, **kwargs)
            stages.append(  # what follows the last epoch's hooks: its checkpoint writes, train_kd's end
                {
                    "stage": "  after the last hooks: checkpoints, end",
                    "rss_mb": _status("VmRSS"),
                    "peak_mb": _status("VmHWM"),
                    "t_s": time.perf_counter() - t0,
                    "trial": k,
                }
            )
            _reset_peak()
            for role, model in seen_models.items():
                if model is not None:
                    n = sum(p.numel() * p.element_size() for p in model.parameters())
                    sizes[f"{role}_params_mb"] = n / MB
            # Adam/AdamW: two moments per parameter of every network that learns (online KD: both)
            sizes["optimiser_state_mb_adam"] = 2 * (
                sizes["student_params_mb"] + sizes.get("teacher_params_mb", 0)
            )
            del seen_models
        import gc

        gc.collect()
        if args.release:  # what a sweep trial does when it ends (kdseg.sweep.trainable.kd_trainable)
            from kdseg.tracking.hardware import release_memory

            release_memory()
        mark(
            "train" if k == 0 else f"train, trial {k + 1} in the same process",
            wandb_service_mb=_children_rss(),
            **(sizes if k == 0 else {}),
        )
        # the peak of the whole training stage, the probed hooks' own peaks included (they reset VmHWM)
        inner = [s["peak_mb"] for s in stages if s.get("trial") == k]
        stages[-1]["peak_mb"] = max([stages[-1]["peak_mb"], *inner])
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    groups = _mapped_groups()
    print(json.dumps({"stages": stages, "mapped_at_end_mb": groups, "pss_mb": _pss()}), flush=True)


def _epoch_hooks(hooks, stages: list[dict[str, Any]], trial: int, t0: float) -> list:
    """``hooks`` (``train_kd``'s epoch hooks) measured apart: first a hook that closes a sub-stage ``epoch N``
    (the training steps and validation since the last reset: their peak, the RSS now), then the image hook
    as its own sub-stage ``epoch N images`` (the peak within it, the RSS after it, its duration). The
    ``train`` stage reports the maximum of all."""

    def sub_stage(name: str, **extra) -> None:
        stages.append(
            {
                "stage": name,
                "rss_mb": _status("VmRSS"),
                "peak_mb": _status("VmHWM"),
                "t_s": time.perf_counter() - t0,
                "trial": trial,
                **extra,
            }
        )
        _reset_peak()

    def epoch_done(ctx) -> None:
        sub_stage(f"  epoch {ctx.epoch}: steps + validation")

    def probed(hook):
        if type(hook).__name__ != "EpochImages":
            return hook

        def images(ctx) -> None:
            start = time.perf_counter()
            hook(ctx)
            sub_stage(f"  epoch {ctx.epoch}: image hook", hook_s=time.perf_counter() - start)

        return images

    return [epoch_done, *(probed(h) for h in hooks)]


def _train_kd_parameters() -> set[str]:
    import inspect

    from kdseg.train import train_kd

    return set(inspect.signature(train_kd).parameters)


def _children_rss() -> float:
    try:
        import psutil

        return sum(c.memory_info().rss for c in psutil.Process().children(recursive=True)) / MB
    except Exception:
        return 0.0


def _pss() -> float | None:
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_trials(args, n: int) -> list[dict[str, Any]]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--size",
        f"{args.size[0]}x{args.size[1]}",
        "--n",
        str(args.n),
        "--epochs",
        str(args.epochs),
        "--wandb",
        args.wandb,
        "--trials-per-process",
        str(args.trials_per_process),
        "--release" if args.release else "--no-release",
        *([] if args.log_images_every is None else ["--log-images-every", str(args.log_images_every)]),
        *(["--optimizer-in-backward"] if args.optimizer_in_backward else []),
    ]
    env = {**os.environ, **dict(kv.split("=", 1) for kv in args.env)}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"trial process failed (exit {p.returncode})")
        out.append(json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=(64, 64))
    p.add_argument("--n", type=int, default=64, help="generated scenes")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--concurrent", default="1,2", help="numbers of trials run at once")
    p.add_argument("--wandb", choices=["disabled", "offline"], default="disabled")
    p.add_argument(
        "--trials-per-process", type=int, default=1, help="trials run one after another in a process"
    )
    p.add_argument(
        "--release",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="release_memory() after each trial, as a sweep trial does (--no-release: as before issue 18)",
    )
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the trial processes")
    p.add_argument(
        "--log-images-every",
        type=int,
        default=None,
        help="tracking.wandb.log_images_every (default: the config's, 5: images after epoch 1; 0: none)",
    )
    p.add_argument(
        "--optimizer-in-backward",
        action="store_true",
        help="train.optimizer_in_backward (parameters updated inside backward, gradients freed there)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    machine = machine_info()
    print_machine(machine)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for n in [int(v) for v in args.concurrent.split(",") if v.strip()]:
        trials = run_trials(args, n)
        results[str(n)] = trials
        first = trials[0]
        rows = []
        for st in first["stages"]:
            extra = {k: v for k, v in st.items() if k not in ("stage", "rss_mb", "peak_mb", "t_s", "trial")}
            rows.append(
                [
                    st["stage"],
                    st["rss_mb"],
                    st["peak_mb"],
                    st["t_s"],
                    ", ".join(
                        f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items()
                    ),
                ]
            )
        table(
            ["stage", "RSS after MB", "peak in stage MB", "at s", "sizes"],
            rows,
            f"{n} trial(s) at once: the first trial's stages ({args.size[0]}x{args.size[1]}, {args.epochs} epochs, "
            f"W&B {args.wandb}{', ' + ' '.join(args.env) if args.env else ''})",
        )
        table(
            ["mapping", "resident MB at end"],
            [[k, v] for k, v in sorted(first["mapped_at_end_mb"].items())],
            "what the first trial's resident memory is, at the end",
        )
        peaks = [max(s["peak_mb"] for s in t["stages"]) for t in trials]
        wandb = [max(s.get("wandb_service_mb", 0.0) for s in t["stages"]) for t in trials]
        table(
            ["trial", "peak RSS MB", "PSS at end MB", "W&B service MB"],
            [
                [i, pk, t["pss_mb"], wb]
                for i, (pk, t, wb) in enumerate(zip(peaks, trials, wandb, strict=True))
            ],
            f"{n} trial(s) at once: peak per trial (target <= {TARGET_MB} MB)",
        )
        results[f"summary_{n}"] = {
            "peak_rss_mb_max": max(peaks),
            "peak_rss_mb_mean": sum(peaks) / n,
            "pss_mb_sum_at_end": sum(t["pss_mb"] or 0 for t in trials),
            "wandb_service_mb_max": max(wandb),
            "target_met": max(peaks) + max(wandb) <= TARGET_MB,
        }
        print(f"peak per trial (max of {n}): {max(peaks):.0f} MB (+ W&B service {max(wandb):.0f} MB)")
    emit(
        {
            "benchmark": "trial_memory",
            "command": " ".join(["python", "benchmarks/trial_memory.py", *sys.argv[1:]]),
            "machine": machine,
            "settings": {
                "size": list(args.size),
                "n": args.n,
                "epochs": args.epochs,
                "wandb": args.wandb,
                "trials_per_process": args.trials_per_process,
                "release": args.release,
                "env": args.env,
                "log_images_every": args.log_images_every,
                "optimizer_in_backward": args.optimizer_in_backward,
            },
            "results": results,
            "total_s": time.perf_counter() - started,
        }
    )


if __name__ == "__main__":
    main()
