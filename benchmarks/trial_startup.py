"""Cold start of a trial: importing what a sweep trial needs, in a fresh process.

Step 1 (a throw-away process): a trial's work for one config, as small as it gets (one training step,
one epoch, 10 generated scenes at 32x32, the trial's W&B run and epoch hooks): the modules it imported
(``sys.modules``, in import order) are what a trial of that config needs. Step 2, ``--repeat`` times:
a fresh ``python`` that imports exactly those modules, in that order; the time from starting it to the end
of its imports is the cold start (its exit is not counted). Step 3: one more such process under ``python
-X importtime`` (not timed: the profiler slows it), for the slowest top-level packages (cumulative import
time) and which of the optional libraries (albumentations, W&B, matplotlib, ...) the config made the trial
import, and through which chain of imports.

Configs (``--configs``): ``quickstart`` (augmentation on, images every 5 epochs, W&B offline: what
``experiments/quickstart_synth.yaml`` uses without an API key) and ``lean`` (augmentation off, no images, W&B
disabled).

    python benchmarks/trial_startup.py [--configs quickstart,lean] [--repeat 3] [--top 15]

Prints tables, the machine and its load, and one JSON line ``{"benchmark": "trial_startup", ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, machine_info, print_machine, table

TARGET_S = 4.0
OPTIONAL = (
    "albumentations",
    "wandb",
    "matplotlib",
    "cv2",
    "pandas",
    "optuna",
    "scipy",
    "sympy",
    "torch._dynamo",
)

CONFIGS = {
    "quickstart": {"augment": True, "images": 5, "wandb": "offline"},
    "lean": {"augment": False, "images": 0, "wandb": "disabled"},
}

# Step 1: what a trial of this config imports (printed as JSON: the modules in import order)
TRIAL = """
import json, sys, tempfile
from pathlib import Path
import kdseg.sweep.trainable
from kdseg.config import validate_config
from kdseg.data import load_data, write_synth
from kdseg.train import train_kd
from kdseg.sweep.trainable import trial_wandb_run
work = Path(tempfile.mkdtemp(prefix="kdseg-startup-"))
root = write_synth(work / "scenes", n=10, size=(32, 32), seed=0)
c = json.loads(sys.argv[1])
cfg = validate_config({
    "data": {"format": "carla", "root": str(root), "image_size": [32, 32], "num_classes": 13,
             "augment": {"enabled": c["augment"]}},
    "teacher": {"arch": "Unet", "encoder": "resnet34"},
    "student": {"arch": "Unet", "encoder": "resnet18"},
    "train": {"epochs": 1, "batch_size": 4, "num_workers": 0, "seed": 0, "max_steps_per_epoch": 1},
    "tracking": {"wandb": {"mode": c["wandb"], "project": "kdseg-bench", "log_images_every": c["images"]}},
})
data = load_data(cfg.data)
run_dir = work / "trials" / "t" / "run"
wb = trial_wandb_run(cfg, {}, work, "t", data, run_dir)
with wb:
    train_kd(cfg, data, lambda m, d: None, run_dir=run_dir, hooks=wb.hooks, keep_last_checkpoint=False)
import shutil
shutil.rmtree(work, ignore_errors=True)
print("KDSEG " + kdseg.__file__)
print("MODULES " + json.dumps([m for m in sys.modules if not m.startswith("__")]))
"""

# Step 2: import them in a fresh process
IMPORT = """
import importlib, json, sys, time
names = json.loads(open(sys.argv[1]).read())
t = time.perf_counter()
# what the trial did not import stays out (a module that tries it, as timm tries W&B, finds it missing
# there too: kdseg hid it)
for absent in set(json.loads(sys.argv[2])) - set(names):
    sys.modules[absent] = None
for name in names:
    if name in sys.modules:
        continue
    try:
        importlib.import_module(name)
    except Exception:
        pass
print("IMPORT_S %.4f" % (time.perf_counter() - t))
print("KDSEG " + sys.modules["kdseg"].__file__)
"""


def trial_modules(config: dict[str, Any]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", TRIAL, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tempfile.gettempdir(),  # python -c puts the working folder first on sys.path: not a checkout
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the trial process failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    where = [ln[len("KDSEG ") :] for ln in proc.stdout.splitlines() if ln.startswith("KDSEG ")]
    print(f"the trial process imported kdseg from {Path(where[-1]).parent if where else '?'}", flush=True)
    return json.loads(lines[-1][len("MODULES ") :])


def import_chains(stderr: str, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """For each of ``names`` that was imported: its cumulative import s and the chain of modules that
    imported it (outermost last), read from ``-X importtime``'s tree (a child is printed before its
    parent, one level deeper). A module imported through ``importlib`` (Ray's lazy subpackages) starts a
    tree of its own, and a library first imported as a submodule of its own has no row under its name."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        rows.append((len(name) - len(name.lstrip(" ")), name.strip(), int(cumulative) / 1e6))
    out: dict[str, dict[str, Any]] = {}
    for i, (depth, name, cumulative) in enumerate(rows):
        if name not in names or name in out:
            continue
        chain = []
        for d, parent, _ in rows[i + 1 :]:
            if d < depth:
                chain.append(parent)
                depth = d
        out[name] = {"s": cumulative, "imported_by": chain}
    return out


def cold_import(names_file: Path) -> tuple[float, float]:
    """(s from starting the process to the end of its imports, import s inside it): a plain process, no
    profiler, and the process's exit (seconds of interpreter teardown) not counted: a trial's start ends
    when its imports do."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", IMPORT, str(names_file), json.dumps(OPTIONAL)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    line = proc.stdout.readline()  # printed when the imports are done
    wall = time.perf_counter() - t
    proc.communicate(timeout=600)
    if not line.startswith("IMPORT_S"):
        raise SystemExit(f"the import process failed (exit {proc.returncode})")
    return wall, float(line.split()[1])


def import_profile(names_file: Path) -> tuple[list[tuple[str, float]], dict[str, Any]]:
    """One more process under ``python -X importtime`` (its overhead is not in the cold start):
    [(top-level package, cumulative s)] and who imported the optional libraries."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", IMPORT, str(names_file), json.dumps(OPTIONAL)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tempfile.gettempdir(),
    )
    top: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if name.startswith(" ") and not name.startswith("  "):  # imported by the script itself: top level
            root = name.strip().split(".")[0]
            top[root] = top.get(root, 0.0) + int(cumulative) / 1e6
    return sorted(top.items(), key=lambda kv: -kv[1]), import_chains(proc.stderr, OPTIONAL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="quickstart,lean")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    machine = machine_info()
    print_machine(machine)
    import kdseg

    print(f"kdseg from {Path(kdseg.__file__).parent}", flush=True)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in [c for c in args.configs.split(",") if c]:
        config = CONFIGS[name]
        modules = trial_modules(config)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(modules, f)
        runs = [cold_import(Path(f.name)) for _ in range(args.repeat)]
        top, chains = import_profile(Path(f.name))
        Path(f.name).unlink()
        walls = [r[0] for r in runs]
        present = [m for m in OPTIONAL if m in modules]
        chains = {k: v for k, v in chains.items() if k in present}  # not a failed try (timm's of W&B)
        table(
            ["package", "cumulative import s"],
            [[k, v] for k, v in top[: args.top]],
            f"{name} ({config}): slowest top-level imports (python -X importtime, one more run)",
        )
        table(
            ["library", "cumulative import s", "imported by (innermost first)"],
            [
                [k, v["s"], " < ".join(v["imported_by"][:8]) or "(top level: a listed module, or importlib)"]
                for k, v in chains.items()
            ],
            f"{name}: what makes a trial import the optional libraries (the importtime run)",
        )
        print(
            f"{name}: cold start {statistics.median(walls):.2f} s median of {args.repeat} (imports "
            f"{statistics.median(r[1] for r in runs):.2f} s; target <= {TARGET_S} s); {len(modules)} modules; "
            f"imported: {', '.join(present) or 'none of ' + ', '.join(OPTIONAL)}"
        )
        results[name] = {
            "config": config,
            "cold_start_s": walls,
            "cold_start_median_s": statistics.median(walls),
            "import_s_median": statistics.median(r[1] for r in runs),
            "modules": len(modules),
            "optional_imported": present,
            "top": top[: args.top],
            "optional_chains": chains,
            "target_met": statistics.median(walls) <= TARGET_S,
        }
    emit(
        {
            "benchmark": "trial_startup",
            "command": " ".join(["python", "benchmarks/trial_startup.py", *sys.argv[1:]]),
            "machine": machine,
            "kdseg": str(Path(kdseg.__file__).parent),
            "results": results,
            "total_s": time.perf_counter() - started,
        }
    )


if __name__ == "__main__":
    main()
