"""How fast the command line answers: wall time of ``--help`` for each command, and what it imports.

Runs each command ``--repeat`` times in a fresh process and reports the median wall time (target:
under 1 s), then imports ``kdseg.cli`` under ``python -X importtime`` in a fresh process and lists the
slowest imports, and checks that no heavy library (torch, ray, segmentation_models_pytorch, optuna,
wandb, albumentations, cv2) is imported just to print help.

Then the same for configs that are refused (exit status 2, nothing written): the README's quickstart space
with ``--out`` a URI, and with a misspelt encoder; each run prints which heavy libraries it imported.

    python benchmarks/cli_startup.py [--repeat 5]

Prints tables, the machine and its load, and one JSON line ``{"benchmark": "cli_startup", ...}``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, machine_info, print_machine, table

TARGET_S = 1.0
HEAVY = ("torch", "ray", "segmentation_models_pytorch", "optuna", "wandb", "albumentations", "cv2")
SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart_cpu.yaml"
REFUSED = {
    "--out a URI": ["kdseg", "sweep", str(SPACE), "--out", "s3://bucket/runs"],
    "an unknown encoder": ["kdseg", "sweep", str(SPACE), "--set", "student.encoder=resnet1"],
}
COMMANDS = [
    ["kdseg", "--help"],
    ["kdseg", "sweep", "--help"],
    ["kdseg", "train", "--help"],
    ["kdseg-sweep", "--help"],
]


def resolve(cmd: list[str]) -> list[str]:
    """The console script when installed, else the same entry point through ``python -m``."""
    if shutil.which(cmd[0]):
        return cmd
    module = "kdseg.cli"
    prog = "sweep_main" if cmd[0] == "kdseg-sweep" else "main"
    return [sys.executable, "-c", f"import sys; from {module} import {prog}; sys.exit({prog}())", *cmd[1:]]


def wall(cmd: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return times


def refused(argv: list[str], repeat: int) -> dict:
    """``kdseg ARGV`` (a config it refuses) ``repeat`` times in a fresh process, in an empty folder: wall
    times, exit statuses, the heavy libraries it imported, whether it wrote anything."""
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: print('HEAVY ' + ','.join(m for m in {HEAVY!r} if m in sys.modules)))\n"
        "from kdseg.cli import main\n"
        "raise SystemExit(main())"
    )
    times, codes, heavy = [], set(), set()
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(repeat):
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", code, *argv[1:]], capture_output=True, text=True, cwd=cwd
            )
            times.append(time.perf_counter() - t)
            codes.add(proc.returncode)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY ")), "HEAVY ")
            heavy.update(m for m in line[len("HEAVY ") :].split(",") if m)
        wrote = sorted(p.name for p in Path(cwd).iterdir())
    return {
        "median_s": statistics.median(times),
        "max_s": max(times),
        "exit": sorted(codes),
        "heavy_imported": sorted(heavy),
        "wrote": wrote,
    }


def import_profile(top: int) -> tuple[float, list[tuple[str, float]], list[str]]:
    """(total s, slowest [(module, cumulative s)], heavy modules imported) for ``import kdseg.cli``."""
    code = (
        "import sys, kdseg.cli as c; c.build_parser() if hasattr(c, 'build_parser') else None; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if parts[1].isdigit():
            rows.append((parts[2], int(parts[1]) / 1e6))
    heavy = [m for m in proc.stdout.strip().split(",") if m]
    total = next((s for name, s in rows if name == "kdseg.cli"), float("nan"))
    rows.sort(key=lambda r: -r[1])
    return total, rows[:top], heavy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--top", type=int, default=8, help="slowest imports to list")
    args = p.parse_args()
    machine = machine_info()
    print_machine(machine)

    rows = []
    for cmd in COMMANDS:
        times = wall(resolve(cmd), args.repeat)
        rows.append({"command": " ".join(cmd), "median_s": statistics.median(times), "max_s": max(times)})
    table(
        ["command", "median s", "max s"],
        [[r["command"], r["median_s"], r["max_s"]] for r in rows],
        f"Wall time of --help ({args.repeat} runs each, fresh process; target < {TARGET_S} s)",
    )
    total, slow, heavy = import_profile(args.top)
    table(
        ["module", "cumulative s"],
        [[name, s] for name, s in slow],
        f"python -X importtime -c 'import kdseg.cli': {total:.3f} s; heavy libraries imported: {heavy or 'none'}",
    )
    refusals = {name: refused(argv, args.repeat) for name, argv in REFUSED.items()}
    table(
        ["refused config", "median s", "max s", "exit", "heavy libraries imported", "wrote"],
        [
            [
                k,
                v["median_s"],
                v["max_s"],
                v["exit"],
                ", ".join(v["heavy_imported"]) or "none",
                v["wrote"] or "nothing",
            ]
            for k, v in refusals.items()
        ],
        f"kdseg sweep {SPACE.parent.name}/{SPACE.name} refused ({args.repeat} runs each, fresh process, empty folder)",
    )
    worst = max(r["median_s"] for r in rows)
    met = worst < TARGET_S and not heavy
    print(
        f"\nslowest --help {worst:.2f} s (target < {TARGET_S} s, no heavy imports): {'met' if met else 'NOT met'}"
    )
    emit(
        {
            "benchmark": "cli_startup",
            "command": " ".join(["python", "benchmarks/cli_startup.py", *sys.argv[1:]]),
            "machine": machine,
            "commands": rows,
            "import_kdseg_cli_s": total,
            "slowest_imports": [{"module": n, "cumulative_s": s} for n, s in slow],
            "heavy_imported": heavy,
            "refused": refusals,
            "summary": {"slowest_help_s": worst, "target_s": TARGET_S, "target_met": met},
        }
    )


if __name__ == "__main__":
    main()
