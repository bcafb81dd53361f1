"""Command line: ``kdseg`` (train, data, sweep tools) and ``kdseg-sweep``.

Heavy libraries (torch, ray, smp) are imported inside the command that needs them, so ``--help``
answers at once. A :class:`~kdseg.errors.KdsegError` prints one ``kdseg: error: ...`` message and
exits with status 2; nothing is written before the input has been validated.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from kdseg.cli.bench import add_bench_parser  # light: no torch at import
from kdseg.cli.cluster import add_cluster_parsers  # stdlib-only at import
from kdseg.cli.data import cmd_data_stats, cmd_data_synth, parse_hw
from kdseg.cli.eval import add_eval_parser  # light: no torch at import
from kdseg.cli.export import add_export_format_args, cmd_export
from kdseg.cli.report import add_report_parser
from kdseg.cli.sweep import cmd_resume, cmd_sweep
from kdseg.cli.train import cmd_train
from kdseg.errors import KdsegError


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config key (repeatable), e.g. --set train.lr=3e-4 --set distill.sites=[logits,decoder]",
    )


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
    s.add_argument("--size", type=parse_hw, default=(96, 96), help="HxW (default 96x96)")
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
