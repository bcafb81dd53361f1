"""Shared fixtures: generated datasets on disk, tiny training configs, the shared real samples, the
``kdseg`` command runner and the one shared sweep (helpers in :mod:`tests.sweeps`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never talk to W&B's servers and never share a cache with the user.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (CamVid, Lyft-Udacity samples): present for developers and CI, never for users."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not available ({SHARED_DATA} is absent)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tests run tiny CPU models: on one intra-op thread they are faster, and far faster on a shared
    machine (:func:`tests.fixtures_layouts.one_torch_thread`); kdseg subprocesses too (``KdsegCLI.env``)."""
    from tests.fixtures_layouts import one_torch_thread

    yield from one_torch_thread()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Generated datasets go to a per-session cache, not ~/.cache/kdseg."""
    cache = tmp_path_factory.mktemp("kdseg-cache")
    old = os.environ.get("KDSEG_CACHE")
    os.environ["KDSEG_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("KDSEG_CACHE", None)
    else:
        os.environ["KDSEG_CACHE"] = old


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """48 generated 64x64 road scenes in the carla layout (PNG files on disk)."""
    from kdseg.data import write_synth

    out = tmp_path_factory.mktemp("synth") / "scenes"
    write_synth(out, n=48, size=(64, 64), seed=0)
    return out


@pytest.fixture(scope="session")
def kdseg():
    """``kdseg(*args, cwd=, env=, timeout=)``: ``python -m kdseg.cli`` as a subprocess of this checkout,
    W&B offline, output captured; ``kdseg.popen(*args)`` starts it; ``kdseg.env(**overrides)``."""
    from tests.sweeps import KdsegCLI

    return KdsegCLI()


@pytest.fixture(scope="session", autouse=True)
def _own_ray_temp_dir():
    """Every Ray the tests start (in this process, in ``kdseg`` subprocesses, in benchmarks) gets this
    session's own temp dir (``RAY_TMPDIR``), never the machine's /tmp/ray: it never joins a cluster
    someone else started there, and pytest-xdist workers never share one. Short: Unix socket paths
    under it are limited to ~107 characters."""
    yield from own_ray_temp_dir()


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, kdseg):
    """One real tiny sweep for the whole test run (:func:`tests.sweeps.run_tiny_sweep`), read by
    test_sweep, test_report and test_evaluate; pytest-xdist workers share it (the first one runs it,
    under a file lock). Tests must not change it (``kdseg report`` writing report.html excepted:
    every test that reads report.html writes it first)."""
    from tests.sweeps import shared_tiny_sweep

    sweep = shared_tiny_sweep(kdseg, run_root(tmp_path_factory))
    assert sweep.proc.returncode == 0, sweep.proc.stdout[-3000:] + sweep.proc.stderr[-3000:]
    return sweep


def run_root(tmp_path_factory) -> Path:
    """The temp folder every pytest-xdist worker of this run shares (this session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def own_ray_temp_dir():
    import shutil
    import tempfile

    old = os.environ.get("RAY_TMPDIR")
    tmp = tempfile.mkdtemp(prefix="kdt", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    try:
        yield Path(tmp)
    finally:
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def tiny_config(root: Path, **sections) -> dict:
    """A training config dict for fast CPU runs on ``root`` (carla layout), sections merged in."""
    cfg = {
        "data": {"format": "carla", "root": str(root), "image_size": [64, 64], "num_classes": 13},
        "teacher": {"arch": "Unet", "encoder": "resnet34"},
        "student": {"arch": "Unet", "encoder": "resnet18"},
        "distill": {"mode": "online", "temperature": 4.0, "alpha": 0.5, "sites": ["logits"]},
        "train": {"epochs": 1, "batch_size": 4, "num_workers": 0, "seed": 0},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return cfg


def tiny_space(
    base: str, *, num_samples: int = 4, max_t: int = 2, extra_space=None, storage=None, **sweep
) -> dict:
    """A search space dict over ``base``: r34 -> lightweight UNet and its no-KD baseline (a grid), T searched."""
    return {
        "base": base,
        "space": {
            "pair": {
                "grid": [
                    {"student.arch": "lightweight_unet", "student.width": 0.5, "label": "r34-light"},
                    {
                        "distill.mode": "none",
                        "student.arch": "lightweight_unet",
                        "student.width": 0.5,
                        "label": "baseline",
                    },
                ]
            },
            "distill.temperature": {"loguniform": [1, 8]},
            **(extra_space or {}),
        },
        "sweep": {
            "num_samples": num_samples,
            "asha": {"max_t": max_t, "grace_period": 1, "reduction_factor": 2},
            "resources_per_trial": {"cpu": 1},
            "max_concurrent": 2,
            "seed": 0,
            # a few steps teach a student too little to reach 0.8 x its teacher: tests of the plumbing run
            # without the quality floor; the floor's own tests (test_selection, test_sweep) set it
            "quality_floor": 0.0,
            **sweep,
        },
        "storage": storage,
    }


def pytest_collection_modifyitems(config, items):
    """Start the long tests (``slow``: sweeps, multi-epoch training; ``bench``: benchmark runs) first: with
    pytest-xdist the quick tests then fill the workers' last minutes instead of one sweep running alone at
    the end. A stable sort: the order within each kind is pytest's."""
    items.sort(key=lambda item: not (item.get_closest_marker("slow") or item.get_closest_marker("bench")))
