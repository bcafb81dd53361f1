"""Memory of 1, 2 and 4 concurrent trials holding the sweep's dataset through Ray's object store.

kdseg's sweep decodes the dataset once in the driver and hands it to every trial with
``tune.with_parameters`` (``ray.put`` once; each trial gets zero-copy, read-only numpy views of the
object store). This benchmark reproduces exactly that with Ray actors standing in for trials (each
imports what a trial imports: ``kdseg.sweep.trainable``, torch, Ray Tune): a synthetic dataset of ``--n``
images at ``--size`` (about 100 MB of uint8 arrays at the defaults) is held by 1, 2 and 4 actors
through the object store ("shared"), against 2 and 4 actors that each decode a private copy with
``kdseg.data.load_data`` ("private", what a sweep without sharing would do). Every actor sums every
array (touching every page); then each actor's RSS, USS and PSS (psutil ``memory_full_info``) and its
resident pages of the object-store mapping (``/proc/PID/smaps``) are read, next to the same figures
for the idle actor before loading. The object store's size is the growth of ``Shmem`` in
``/proc/meminfo`` (Ray's plasma store lives in ``/dev/shm``).

The figure that matters is ``total``: the data memory of all trials together = the private pages the
actors added (sum of dUSS) + the one shared copy in the store. Shared: it should stay at about one
dataset for 1, 2 and 4 trials (ratio to 1 trial ~1.0); private: it grows with the number of trials.

    python benchmarks/shared_data_memory.py [--n 400] [--size 256x256] [--workers 1,2,4] [--out DIR]

Prints a table, the machine and the load, and one JSON line ``{"benchmark": "shared_data_memory", ...}``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    MB,
    emit,
    machine_info,
    parse_size,
    print_machine,
    proc_memory,
    shmem_bytes,
    synth_data,
    table,
    work_dir,
)


def measure(args, work: Path) -> dict[str, Any]:
    import numpy as np
    import ray

    from kdseg.config import DataConfig
    from kdseg.data import load_data

    h, w = args.size
    print(f"dataset memory: {args.n} images at {h}x{w}, shared vs private", flush=True)
    t = time.perf_counter()
    root = synth_data(work, n=args.n, size=(h, w))
    gen_s = time.perf_counter() - t
    cfg_dict = {"format": "carla", "root": str(root), "image_size": [h, w], "num_classes": 13}

    t = time.perf_counter()
    ray.init(num_cpus=max(args.workers), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    init_s = time.perf_counter() - t

    @ray.remote(num_cpus=1)
    class Holder:
        """Stands in for a trial process: imports what a trial imports, then holds the dataset."""

        def __init__(self) -> None:
            import kdseg.data  # noqa: F401  (SegData's module; cv2, PIL)
            import kdseg.sweep.trainable  # noqa: F401  (torch, ray.tune: a trial's baseline footprint)

            self.data = None

        def pid(self) -> int:
            return os.getpid()

        def take_shared(self, box: list) -> dict:
            self.data = ray.get(box[0])  # zero-copy: arrays are read-only views of the object store
            return self._touch()

        def load_private(self, cfg: dict) -> dict:
            from kdseg.config import DataConfig
            from kdseg.data import load_data

            self.data = load_data(DataConfig.model_validate(cfg))
            return self._touch()

        def _touch(self) -> dict:
            t = time.perf_counter()
            total = 0
            for split in (self.data.train, self.data.val):
                total += int(split.images.sum(dtype=np.uint64)) + int(split.masks.sum(dtype=np.uint64))
            return {
                "checksum": total,
                "writeable": bool(self.data.train.images.flags.writeable),
                "touch_s": time.perf_counter() - t,
            }

    shm0 = shmem_bytes()
    t = time.perf_counter()
    data = load_data(DataConfig.model_validate(cfg_dict))
    decode_s = time.perf_counter() - t
    nbytes = data.nbytes()
    t = time.perf_counter()
    ref = ray.put(data)
    put_s = time.perf_counter() - t
    del data
    gc.collect()
    store_bytes = shmem_bytes() - shm0
    driver_before = proc_memory(os.getpid())

    def wait_gone(pids: list[int], timeout: float = 30.0) -> None:
        import psutil

        deadline = time.time() + timeout
        while time.time() < deadline and any(psutil.pid_exists(p) for p in pids):
            time.sleep(0.2)

    configs = [("shared", k) for k in args.workers]
    if not args.no_private:
        configs += [("private", k) for k in args.workers if k > 1]
    rows = []
    for mode, k in configs:
        holders = [Holder.remote() for _ in range(k)]
        pids = ray.get([hd.pid.remote() for hd in holders])
        idle = [proc_memory(p) for p in pids]
        shm_before = shmem_bytes()
        t = time.perf_counter()
        if mode == "shared":
            # the ref goes in a list, so the actor itself calls ray.get (as tune.with_parameters does)
            info = ray.get([hd.take_shared.remote([ref]) for hd in holders])
        else:
            info = ray.get([hd.load_private.remote(cfg_dict) for hd in holders])
        load_s = time.perf_counter() - t
        held = [proc_memory(p) for p in pids]
        driver = proc_memory(os.getpid())
        shm_growth = shmem_bytes() - shm_before
        for hd in holders:
            ray.kill(hd)
        wait_gone(pids)

        def mean(key: str, xs=held) -> float:
            return statistics.mean(x[key] for x in xs)

        d_uss = [a["uss_mb"] - b["uss_mb"] for a, b in zip(held, idle, strict=True)]
        d_pss = [a["pss_mb"] - b["pss_mb"] for a, b in zip(held, idle, strict=True)]
        store_mb = store_bytes / MB if mode == "shared" else 0.0
        rows.append(
            {
                "mode": mode,
                "workers": k,
                "load_s": load_s,
                "zero_copy": not any(i["writeable"] for i in info),
                "checksums_agree": len({i["checksum"] for i in info}) == 1,
                "idle_uss_mb": mean("uss_mb", idle),
                "idle_pss_mb": mean("pss_mb", idle),
                "rss_mb": mean("rss_mb"),
                "uss_mb": mean("uss_mb"),
                "pss_mb": mean("pss_mb"),
                "plasma_rss_mb": mean("plasma_rss_mb"),
                "plasma_pss_mb": mean("plasma_pss_mb"),
                "data_uss_mb": statistics.mean(d_uss),
                "data_pss_mb": statistics.mean(d_pss),
                "sum_data_uss_mb": sum(d_uss),
                "sum_data_pss_mb": sum(d_pss),
                "driver_plasma_pss_mb": driver["plasma_pss_mb"],
                "object_store_mb": store_mb,
                "shmem_growth_during_load_mb": shm_growth / MB,
                # private pages the workers added + the one shared copy in the store
                "total_data_mb": sum(d_uss) + store_mb,
            }
        )
    del ref
    t = time.perf_counter()
    ray.shutdown()
    shutdown_s = time.perf_counter() - t

    table(
        [
            "config",
            "load_s",
            "zero-copy",
            "RSS",
            "USS",
            "PSS",
            "plasma RSS",
            "dUSS",
            "dPSS",
            "sum dUSS",
            "sum dPSS",
            "store",
            "total",
        ],
        [
            [
                f"{r['workers']} {r['mode']}",
                r["load_s"],
                r["zero_copy"],
                r["rss_mb"],
                r["uss_mb"],
                r["pss_mb"],
                r["plasma_rss_mb"],
                r["data_uss_mb"],
                r["data_pss_mb"],
                r["sum_data_uss_mb"],
                r["sum_data_pss_mb"],
                r["object_store_mb"],
                r["total_data_mb"],
            ]
            for r in rows
        ],
        f"Dataset memory, MB (dataset {nbytes / MB:.1f} MB of arrays; per-worker figures are means; "
        "d = held minus the same actor idle; store = Shmem growth at ray.put; total = sum dUSS + store)",
    )
    print(
        f"  idle actor (imports kdseg.sweep.trainable): USS {rows[0]['idle_uss_mb']:.0f} MB, "
        f"PSS {rows[0]['idle_pss_mb']:.0f} MB; the driver, which wrote the object, also maps it "
        f"(its plasma PSS share is in the JSON as driver_plasma_pss_mb)"
    )
    return {
        "n_images": args.n,
        "size": [h, w],
        "dataset_mb": nbytes / MB,
        "synth_generate_s": gen_s,
        "ray_init_s": init_s,
        "driver_decode_s": decode_s,
        "ray_put_s": put_s,
        "object_store_mb": store_bytes / MB,
        "driver_plasma_rss_mb_after_put": driver_before["plasma_rss_mb"],
        "ray_shutdown_s": shutdown_s,
        "configs": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=400, help="images in the dataset")
    p.add_argument("--size", type=parse_size, default=(256, 256), help="HxW of the dataset's images")
    p.add_argument("--workers", type=_ints, default=[1, 2, 4], help="comma-separated trial counts")
    p.add_argument("--no-private", action="store_true", help="skip the private-copy rows")
    p.add_argument("--out", type=Path, default=None, help="keep the generated data (and a JSON file) here")
    args = p.parse_args()
    if args.n < 2 or min(args.workers) < 1:
        p.error("--n must be >= 2 and every --workers entry >= 1")

    os.environ.setdefault("WANDB_MODE", "disabled")
    machine = machine_info()
    print_machine(machine)
    started = time.perf_counter()
    with work_dir(args.out, "kdseg-shared-mem-") as work:
        result = measure(args, work)
    import ray

    machine["ray"] = ray.__version__
    rows = {(r["mode"], r["workers"]): r for r in result["configs"]}
    one = rows.get(("shared", 1))
    summary: dict[str, Any] = {"dataset_mb": result["dataset_mb"]}
    for (mode, k), r in sorted(rows.items()):
        summary[f"total_data_mb_{mode}_{k}"] = r["total_data_mb"]
        # whole processes: every trial's unique memory (torch, Ray, its data pages) + the shared copy
        summary[f"total_uss_mb_{mode}_{k}"] = r["uss_mb"] * k + r["object_store_mb"]
        if one is not None and one["total_data_mb"] > 0:
            summary[f"ratio_{mode}_{k}_vs_shared_1"] = r["total_data_mb"] / one["total_data_mb"]
    table(
        ["trials", "shared total MB", "ratio vs 1", "private total MB", "ratio vs 1 shared"],
        [
            [
                k,
                rows[("shared", k)]["total_data_mb"] if ("shared", k) in rows else None,
                summary.get(f"ratio_shared_{k}_vs_shared_1"),
                rows[("private", k)]["total_data_mb"] if ("private", k) in rows else None,
                summary.get(f"ratio_private_{k}_vs_shared_1"),
            ]
            for k in args.workers
        ],
        f"Summary: data memory of all trials together (dataset {result['dataset_mb']:.1f} MB)",
    )
    emit(
        {
            "benchmark": "shared_data_memory",
            "command": " ".join(["python", "benchmarks/shared_data_memory.py", *sys.argv[1:]]),
            "machine": machine,
            "summary": summary,
            "result": result,
            "total_s": time.perf_counter() - started,
        },
        None if args.out is None else work / "shared_data_memory.json",
    )


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


if __name__ == "__main__":
    main()
