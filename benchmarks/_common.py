"""Helpers shared by the benchmarks: the machine they ran on, tables, JSON output, process memory, and
one timed sweep.

Every benchmark prints its figures as a table and, last, one JSON line holding ``"benchmark"``,
``"machine"`` (:func:`machine_info`: CPU model, cores, RAM, load average, python/torch/ray versions)
and its results, so a figure is never separated from the machine and the load it came from.
Imported as ``from _common import ...`` (the benchmarks run as scripts from this folder).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MB = 2**20


def cpu_model() -> str:
    from kdseg.deploy.bench import cpu_name  # light: kdseg.bench imports torch only inside its functions

    return cpu_name() or "unknown"


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: str | None = None) -> dict[str, Any]:
    """The machine, the software and the load right now (1, 5 and 15 minute load averages)."""
    import torch

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "loadavg": loadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    try:
        import psutil

        info["ram_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if "ray" in sys.modules:
        info["ray"] = sys.modules["ray"].__version__
    if device is not None and device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def print_machine(info: dict[str, Any]) -> None:
    la = info.get("loadavg")
    gpu = f", GPU {info['gpu']} (CUDA {info['cuda']})" if "gpu" in info else ""
    print(
        f"machine: {info['cpu_model']}, {info['cpu_count']} cores (affinity {info['cpu_affinity']}, "
        f"torch threads {info['torch_threads']}){gpu}; python {info['python']}, torch {info['torch']}"
        + (f", ray {info['ray']}" if "ray" in info else "")
        + (f"; load average {la[0]} / {la[1]} / {la[2]} (1/5/15 min)" if la else ""),
        flush=True,
    )


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def rnd(x: Any, nd: int = 4) -> Any:
    """Round floats for JSON (NaN and inf become null: JSON has neither)."""
    if isinstance(x, float):
        return None if x != x or x in (float("inf"), float("-inf")) else round(x, nd)
    if isinstance(x, dict):
        return {k: rnd(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rnd(v, nd) for v in x]
    return x


def table(headers: list[str], rows: list[list[Any]], title: str) -> None:
    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  " + "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  " + "  ".join("-" * w for w in widths))
    for r in cells:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def emit(report: dict[str, Any], out: Path | None = None) -> None:
    """Print the one JSON line (last line of the output); also write it to ``out`` when given."""
    report.setdefault("machine", {})["loadavg_at_end"] = loadavg()
    line = json.dumps(rnd(report))
    if out is not None:
        out.write_text(line + "\n")
    print(line, flush=True)


# ------------------------------------------------------------------------------ process memory


def shmem_bytes() -> int:
    """System-wide shared memory (tmpfs, /dev/shm; Ray's plasma store lives there)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1]) * 1024
    return 0


def plasma_pages(pid: int) -> tuple[int, int]:
    """(Rss, Pss) in bytes of a process's mappings of Ray's plasma file (``/dev/shm/plasma*``)."""
    rss = pss = 0
    current = ""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if not parts:
                    continue
                if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                    current = parts[5] if len(parts) > 5 else ""
                elif "plasma" in current:
                    if parts[0] == "Rss:":
                        rss += int(parts[1]) * 1024
                    elif parts[0] == "Pss:":
                        pss += int(parts[1]) * 1024
    except OSError:
        pass
    return rss, pss


def proc_memory(pid: int) -> dict[str, float]:
    """RSS, USS, PSS (MB) of a process, and its resident share of Ray's object store mapping."""
    import psutil

    m = psutil.Process(pid).memory_full_info()
    p_rss, p_pss = plasma_pages(pid)
    return {
        "rss_mb": m.rss / MB,
        "uss_mb": m.uss / MB,
        "pss_mb": m.pss / MB,
        "plasma_rss_mb": p_rss / MB,
        "plasma_pss_mb": p_pss / MB,
    }


def synth_data(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """Generated road scenes (carla layout) under ``root`` (reused when already there)."""
    from kdseg.data import write_synth

    h, w = size
    return write_synth(root / f"synth_{h}x{w}_n{n}_s{seed}", n=n, size=size, seed=seed)


@contextmanager
def work_dir(out: Path | None, prefix: str) -> Iterator[Path]:
    """The folder a benchmark writes to: ``out`` (kept), or a temporary one deleted afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix)) if out is None else out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if out is None:
            shutil.rmtree(work, ignore_errors=True)


def timed_sweep(name: str, space: Path, out_root: Path) -> tuple[Any, Any, float]:
    """Plan and run one real sweep of ``space`` in this process: ``(plan, result, run_sweep seconds)``."""
    from kdseg.sweep.driver import plan_sweep, run_sweep

    print(f"\n== {name}: {space.name} ==", flush=True)
    plan = plan_sweep(space, out_root=out_root, name=name)
    t = time.perf_counter()
    result = run_sweep(plan)
    return plan, result, time.perf_counter() - t


def trial_epochs(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The epochs (metrics.jsonl) of a leaderboard row's trial; [] when it has no run folder."""
    from kdseg.layout import TRIAL_RUN_DIR, read_metrics

    return read_metrics(Path(row["path"]) / TRIAL_RUN_DIR) if row.get("path") else []


def tune_results(trial_dir: Path) -> list[dict[str, Any]]:
    """Every result a trial reported to Tune, in order (Tune's ``result.json`` in its folder); [] without one."""
    from ray.tune.result import EXPR_RESULT_FILE

    f = Path(trial_dir) / EXPR_RESULT_FILE
    if not f.is_file():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def trial_reported(row: dict[str, Any], key: str) -> dict[int, Any]:
    """epoch -> ``key`` as a leaderboard row's trial reported it to Tune (what ASHA compared), the first
    report of an epoch kept (a trial restarted from scratch reports it again); {} without a result file."""
    out: dict[int, Any] = {}
    for r in tune_results(Path(row["path"])) if row.get("path") else []:
        if r.get("epoch") is not None:
            out.setdefault(int(r["epoch"]), r.get(key))
    return out
