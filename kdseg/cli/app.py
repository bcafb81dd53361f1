"""Command line: ``kdseg`` (train, data, sweep tools) and ``kdseg-sweep``.

Heavy libraries (torch, ray, smp) are imported inside the command that needs them, so ``--help``
answers at once. A :class:`~kdseg.errors.KdsegError` prints one ``kdseg: error: ...`` message and
exits with status 2; nothing is written before the input has been validated.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kdseg.cluster.submit import add_cluster_parsers  # stdlib-only at import
from kdseg.deploy.bench import add_bench_parser  # light: no torch at import
from kdseg.deploy.evaluate import add_eval_parser  # light: no torch at import
from kdseg.deploy.model_export import add_export_format_args
from kdseg.errors import KdsegError
from kdseg.fileio import require_writable
from kdseg.layout import FULL_CHECKPOINT, LEADERBOARD, STUDENT_CHECKPOINT
from kdseg.report.html import add_report_parser


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW like 96x128, got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small (at least 8x8)")
    return h, w


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config key (repeatable), e.g. --set train.lr=3e-4 --set distill.sites=[logits,decoder]",
    )


# ---------------------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from kdseg.config import load_config

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / "train" / (cfg.name or Path(args.config).stem)
    resume = None
    if (out / FULL_CHECKPOINT).exists():
        if not args.resume:
            raise KdsegError(
                f"{out}: holds a training run already; pass --resume to continue it or choose another --out"
            )
        resume = out / FULL_CHECKPOINT
    elif args.resume:
        raise KdsegError(f"{out}: no {FULL_CHECKPOINT} to resume from")
    require_writable(out, "run")

    from kdseg.data import load_data
    from kdseg.errors import DatasetError

    try:
        data = load_data(cfg.data, progress=True)
    except DatasetError as e:  # name the config the dataset came from too
        raise DatasetError(f"{args.config}: data: {e}") from None
    from rich.console import Console

    console = Console(stderr=True)
    console.print(
        f"[bold]kdseg train[/] {args.config} -> {out}  "
        f"({len(data.train.names)} train / {len(data.val.names)} val images, {data.num_classes} classes)"
    )
    return _run_training(cfg, data, out, resume, console)


def _run_training(cfg, data, out: Path, resume, console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from kdseg.train import Diverged, train_kd

    started = time.perf_counter()
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task("train", total=None, epoch=1, epochs=cfg.train.epochs)

    def on_step(step: int, total: int) -> None:
        progress.update(task, completed=step, total=total)

    def report(m: dict, _ckpt) -> None:
        teacher = (
            f"  teacher mIoU {m['teacher_val_miou']:.3f}" if m.get("teacher_val_miou") is not None else ""
        )
        loss = f"{m['train_loss']:.3f}" if m.get("train_loss") is not None else "-"
        progress.console.print(
            f"epoch {m['epoch']:>3}/{cfg.train.epochs}  loss {loss}  student mIoU {m['val_miou']:.3f}{teacher}"
            f"  {m['images_per_s']:.1f} img/s"
        )
        progress.update(task, epoch=min(m["epoch"] + 1, cfg.train.epochs), completed=0)

    from kdseg.tracking.run import WandbRun

    rank = int(os.environ.get("RANK", "0"))  # accelerate launch / torchrun: one W&B run and summary, rank 0's
    wb = WandbRun(cfg, out, class_names=data.class_names, mode="disabled" if rank else None)
    try:
        with progress, wb:
            last = train_kd(
                cfg, data, wb.wrap(report), run_dir=out, resume=resume, on_step=on_step, hooks=wb.hooks
            )
    except Diverged as e:
        console.print(f"[red]diverged:[/] {e}")
        console.print(wb.describe(), highlight=False, markup=False, soft_wrap=True)
        return 1
    if rank:
        return 0
    console.print(wb.describe(), highlight=False, markup=False, soft_wrap=True)
    took = time.perf_counter() - started
    s = cfg.student
    student = s.arch if s.arch == "lightweight_unet" else f"{s.arch}/{s.encoder}"
    teacher = f" (teacher {last['teacher_val_miou']:.3f})" if last.get("teacher_val_miou") is not None else ""
    if not last:
        print(f"nothing to do: {out} already finished {cfg.train.epochs} epochs")
        return 0
    print(
        f"done: student {student} {last['student_params'] / 1e6:.2f}M params, val mIoU "
        f"{last['val_miou']:.4f}{teacher}, {last['epoch']} epochs in {took:.0f}s -> {out / STUDENT_CHECKPOINT}"
    )
    return 0


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


# ---------------------------------------------------------------------------------------- sweep


def cmd_sweep(args: argparse.Namespace) -> int:
    from kdseg.sweep.driver import plan_sweep, run_sweep

    overrides = args.overrides
    if args.smoke:
        from kdseg.sweep import smoke

        overrides = smoke.smoke_overrides(args.space, args.overrides)
        print(smoke.describe(overrides, args.overrides), file=sys.stderr)
    plan = plan_sweep(
        args.space,
        out_root=args.out,
        name=args.name,
        overrides=overrides,
        address=args.address,
        verbose=args.verbose,
    )
    return _print_sweep_result(run_sweep(plan))


def cmd_resume(args: argparse.Namespace) -> int:
    from kdseg.sweep.driver import resume_sweep

    return _print_sweep_result(
        resume_sweep(args.sweep_dir, address=args.address, verbose=args.verbose, storage=args.storage)
    )


def _print_sweep_result(result, console=None) -> int:
    from rich.console import Console

    from kdseg.sweep.ranking import render_leaderboard

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and CI: wide enough for the whole table
            console = Console(width=160)
    console.print(render_leaderboard(result.leaderboard, title=f"leaderboard: {result.sweep_dir.name}"))
    counts: dict[str, int] = {}
    for row in result.leaderboard:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(
        f"{len(result.leaderboard)} trials ({summary}) in {result.wall_time_s:.0f}s", highlight=False
    )
    from kdseg.tracking.run import finish_sweep

    # Paths under the working directory are shown relative to it, so that a command stays on one line
    # of a narrow terminal; commands are printed unbroken (soft wrap) so that they copy whole.
    sweep_dir = Path(result.sweep_dir).resolve()
    short = _shown(sweep_dir)
    lines = [f"leaderboard: {short / LEADERBOARD}"]
    lines += [line.replace(str(sweep_dir), str(short)) for line in finish_sweep(None, result)]
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if result.best_config is None:
        from kdseg.sweep.ranking import why_no_winner

        why = why_no_winner(result.leaderboard)
        if "every trial failed" in why:
            console.print("no trial produced a result; see the errors above", style="red")
            return 1
        # the sweep worked; its answer is that no student is good enough to deploy
        console.print(f"no winner, so no best_config.yaml: {why}", style="yellow", highlight=False)
        return 0
    console.print(f"best config: {_shown(result.best_config)}", highlight=False, soft_wrap=True)
    return 0


def _shown(path) -> Path:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def cmd_export(args: argparse.Namespace) -> int:
    if args.format:  # the student itself, as a runtime can load it
        from kdseg.deploy.model_export import run_export_format

        return run_export_format(args)
    from kdseg.deploy.best_config import export_config

    path, row = export_config(args.sweep_dir, out=args.output, rank_by=args.rank_by)
    print(
        f"wrote {path}: trial {row['trial_id']} ({row.get('teacher')} -> {row.get('student')}, "
        f"val mIoU {row.get('val_miou'):.4f}); train it with: kdseg train {path}"
    )
    return 0


# --------------------------------------------------------------------------------------- parser


class _Formatter(argparse.HelpFormatter):
    """Wraps prose; keeps indented lines (the examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            indent + line
            if line.startswith("  ")
            else super(_Formatter, self)._fill_text(line, width, indent)
            for line in text.splitlines()
        )


SWEEP_DESCRIPTION = (
    "Run a hyper-parameter sweep of a search space: Ray Tune trials, Optuna (TPE, grid points first), "
    "ASHA early stopping. Prints a live trial table, then the leaderboard; writes ROOT/NAME/ "
    "(leaderboard.csv, best_config.yaml, optuna.db, tune/). --set overrides the base config (data.*, "
    "train.*, ...) and the space file's own keys (sweep.*, space.*, storage)."
)

# description, example (with %(prog)s) of every command, by its words after `kdseg`
HELP: dict[str, tuple[str, str]] = {
    "": (
        "Online knowledge distillation for semantic segmentation: train, sweep, compare, export.",
        "%(prog)s train experiments/quickstart_synth.yaml --out runs/train/demo",
    ),
    "train": (
        "Train one teacher/student pair from a training config, without Ray: writes config.yaml, "
        "metrics.jsonl, student.pt and checkpoint.pt to OUT.",
        "%(prog)s experiments/quickstart_synth.yaml --out runs/train/demo --set train.epochs=2",
    ),
    "data": (
        "Dataset tools: generate road scenes, count class pixels.",
        "%(prog)s synth --out /tmp/synth --n 64 --size 64x64",
    ),
    "data synth": (
        "Generate procedural road scenes in the carla (Lyft-Udacity) layout: CameraRGB/ and CameraSeg/.",
        "%(prog)s --out /tmp/synth --n 64 --size 64x64",
    ),
    "data stats": (
        "Count the training pixels of each class of a config's dataset and show the inverse and "
        "median_frequency class weights: a table, class_stats.png and class_stats.json.",
        "%(prog)s experiments/camvid_online_r34_r18.yaml --set data.root=/data/camvid",
    ),
    "sweep": (
        SWEEP_DESCRIPTION,
        "%(prog)s search_spaces/kd_temperature_alpha.yaml --set data.root=/data/lyft_udacity \\\n"
        "      --set sweep.num_samples=4 --set sweep.max_concurrent=2\n"
        "  %(prog)s search_spaces/backbones.yaml --smoke --set data.root=/data/lyft_udacity",
    ),
    "resume": (
        "Continue an interrupted sweep from its folder; finished trials keep their results and are not rerun.",
        "%(prog)s runs/quickstart",
    ),
    "export": (
        "Write the best trial's complete training config (kdseg train accepts it unchanged), or with "
        "--format the best student itself as ONNX or TorchScript, checked against PyTorch.",
        "%(prog)s runs/quickstart --format onnx",
    ),
    "eval": (
        "",
        "%(prog)s runs/winner --split test --teacher\n"
        "  %(prog)s runs/quickstart --pareto --split test --set data.test_root=/data/carla_test",
    ),
    "bench": ("", "%(prog)s experiments/carla_online_r34_r18.yaml --size 512x512 --device cpu"),
    "submit": ("", "%(prog)s search_spaces/backbones.yaml --address http://HOST:8265 --out /shared/runs"),
    "status": (
        "Print the status of a sweep job submitted with kdseg submit.",
        "%(prog)s kdseg-backbones-1a2b3c",
    ),
    "logs": ("Print the logs of a sweep job submitted with kdseg submit.", "%(prog)s kdseg-backbones-1a2b3c"),
    "report": ("", "%(prog)s runs/quickstart -o /tmp/quickstart.html"),
}


def _add_sweep_args(sw: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sw.add_argument("space", help="search space YAML (see search_spaces/)")
    sw.add_argument("--out", default="runs", help="root folder of sweeps (default: runs)")
    sw.add_argument("--name", help="sweep name = folder and Optuna study name (default: the space's name)")
    sw.add_argument(
        "--address", help="join a Ray cluster (e.g. auto or ray://host:10001) instead of local Ray"
    )
    sw.add_argument(
        "--smoke",
        action="store_true",
        help="a CPU dry run of the same question: every grid point once, 64x64 images, 2 epochs of 2 "
        "steps, no pretrained weights, 1 CPU a trial (the overrides are printed; --set wins)",
    )
    sw.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    _add_set(sw)
    sw.set_defaults(func=cmd_sweep)
    return sw


def _document(p: argparse.ArgumentParser, words: str = "") -> None:
    """Give ``p`` and its subcommands their description and example from :data:`HELP`."""
    description, example = HELP[words]
    p.formatter_class = _Formatter
    if description and not p.description:
        p.description = description
    p.epilog = ("examples:\n  " if "\n" in example else "example:\n  ") + example
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                _document(child, f"{words} {name}".strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdseg")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a teacher/student pair from a config (no Ray)")
    t.add_argument("config", help="training config YAML (see experiments/)")
    t.add_argument("--out", help="run folder (default: runs/train/<config name>)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    _add_set(t)
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="TOOL")
    s = dsub.add_parser("synth", help="generate procedural road scenes in the carla (Lyft-Udacity) layout")
    s.add_argument("--out", required=True, help="output folder (gets CameraRGB/ and CameraSeg/)")
    s.add_argument("--n", type=int, default=64, help="number of image/label pairs (default 64)")
    s.add_argument("--size", type=_size, default=(96, 96), help="HxW (default 96x96)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--force", action="store_true", help="overwrite a non-empty folder")
    s.set_defaults(func=cmd_data_synth)
    st = dsub.add_parser(
        "stats", help="class pixel frequencies of a config's training split and the class weights"
    )
    st.add_argument("config", help="training config YAML (its data section is read)")
    st.add_argument("--out", help="folder for class_stats.png/.json (default: runs/data_stats/<config name>)")
    _add_set(st)
    st.set_defaults(func=cmd_data_stats)

    _add_sweep_args(sub.add_parser("sweep", help="run a hyper-parameter sweep (same as kdseg-sweep)"))

    r = sub.add_parser("resume", help="continue an interrupted sweep")
    r.add_argument("sweep_dir", help="the sweep folder (runs/NAME)")
    r.add_argument("--address", help="join a Ray cluster instead of local Ray")
    r.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    r.add_argument(
        "--storage",
        metavar="URL",
        help="the sweep's database URL again, with its password (never stored; PGPASSWORD or ~/.pgpass "
        "also work)",
    )
    r.set_defaults(func=cmd_resume)

    e = sub.add_parser("export", help="write the best trial's complete training config")
    e.add_argument("sweep_dir", help="the sweep folder (runs/NAME)")
    e.add_argument(
        "-o",
        "--output",
        help="output file (default: SWEEP_DIR/best_config.yaml; with --format: "
        "SWEEP_DIR/best_student.onnx or .torchscript.pt)",
    )
    e.add_argument(
        "--rank-by",
        help="rank by this leaderboard column instead of the sweep's objective "
        "(iou_per_mparam, val_miou, pareto, teacher_val_miou, ...)",
    )
    add_export_format_args(e)
    e.set_defaults(func=cmd_export)

    add_bench_parser(sub)
    add_eval_parser(sub)
    add_cluster_parsers(sub)
    add_report_parser(sub)
    _document(p)
    return p


def build_sweep_parser() -> argparse.ArgumentParser:
    """``kdseg-sweep``: the arguments of ``kdseg sweep``, under its own name."""
    p = _add_sweep_args(argparse.ArgumentParser(prog="kdseg-sweep"))
    p.formatter_class = _Formatter
    p.description, example = HELP["sweep"]
    p.epilog = f"examples:\n  {example}"
    return p


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return func(args)
    except KdsegError as e:
        print(f"kdseg: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("kdseg: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _run(args.func, args)


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """``kdseg-sweep SPACE.yaml ...``: the same as ``kdseg sweep SPACE.yaml ...``."""
    args = build_sweep_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return _run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
