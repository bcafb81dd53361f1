"""The one way tests run kdseg as a user runs it, write a sweep's input files, and check a finished sweep.

- :class:`KdsegCLI` (the ``kdseg`` fixture): ``python -m kdseg.cli ARGS`` in a subprocess of this
  checkout (its folder first on PYTHONPATH, so the subprocess and its Ray workers import this tree),
  W&B offline unless the environment given says otherwise, output captured, with a timeout.
- :func:`write_space`: ``base.yaml`` (:func:`tests.conftest.tiny_config`) and ``space.yaml``
  (:func:`tests.conftest.tiny_space`) in a folder.
- :func:`check_consistent`: leaderboard rows = Ray trial folders = Optuna trials, states agreeing.
- :func:`run_tiny_sweep`: the one real sweep many test files read (the ``tiny_sweep`` fixture), run once
  per test run and shared by pytest-xdist workers (:func:`shared_tiny_sweep`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import REPO, tiny_config, tiny_space

# A configured "API key" that must never be written or printed by a sweep that has it in its environment.
FAKE_KEY = "kdsegfake" + "fedcba9876543210" * 2


class KdsegCLI:
    """``kdseg ARGS`` as a subprocess: ``kdseg(*args)`` runs it to the end, ``kdseg.popen(*args)`` starts it.

    ``command=KdsegCLI.kdseg_sweep`` runs the ``kdseg-sweep`` entry point instead of ``kdseg``.
    """

    kdseg = (sys.executable, "-m", "kdseg.cli")
    kdseg_sweep = (sys.executable, "-c", "from kdseg.cli import sweep_main; raise SystemExit(sweep_main())")
    # ``kdseg``, printing at exit which of the heavy libraries the process (a sweep's driver) imported
    HEAVY = ("torch", "segmentation_models_pytorch", "timm", "tensorboardX", "wandb")
    kdseg_listing_imports = (
        sys.executable,
        "-c",
        "import atexit, json, sys\n"
        f"atexit.register(lambda: print('IMPORTED ' + json.dumps([m for m in {HEAVY!r} if m in sys.modules])))\n"
        "from kdseg.cli import main\n"
        "raise SystemExit(main())",
    )

    @staticmethod
    def env(base: dict[str, str] | None = None, **overrides: str) -> dict[str, str]:
        """``base`` (default: this process's environment) with W&B offline and one OpenMP thread unless
        ``base`` says otherwise, this checkout first on PYTHONPATH, and ``overrides``."""
        env = dict(os.environ if base is None else base)
        env.setdefault("WANDB_MODE", "offline")
        env.setdefault("OMP_NUM_THREADS", "1")  # tiny models; two spinning threads on a busy machine crawl
        path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO]
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *path])
        return {**env, **overrides}

    def __call__(
        self,
        *args,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 600,
        command: tuple[str, ...] | None = None,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*(command or self.kdseg), *map(str, args)],
            cwd=cwd or REPO,
            env=self.env(env),
            text=True,
            capture_output=True,
            timeout=timeout,
        )

    def popen(
        self,
        *args,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        command: tuple[str, ...] | None = None,
        **kw,
    ) -> subprocess.Popen:
        """Started, not waited for; stdout and stderr merged into one pipe unless ``kw`` says otherwise."""
        kw = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **kw}
        argv = [*(command or self.kdseg), *map(str, args)]
        return subprocess.Popen(argv, cwd=cwd or REPO, env=self.env(env), **kw)


def write_space(
    folder: Path,
    data_root: Path,
    *,
    base: dict | None = None,
    base_name: str = "base.yaml",
    space_path: Path | None = None,
    **space,
) -> Path:
    """``folder/base.yaml`` (tiny_config over ``data_root`` with the ``base`` sections merged in) and
    ``space.yaml`` (tiny_space with ``space``'s keyword arguments); returns the space file.

    ``space_path`` puts the space file elsewhere (``base`` is then named relative to it by ``base_name``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(data_root, **(base or {}))
    (folder / "base.yaml").write_text(yaml.safe_dump(cfg))
    path = space_path or folder / "space.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tiny_space(base_name, **space)))
    return path


def write_split_synth(root: Path, sizes=(("train", 8), ("val", 4), ("test", 4)), size=(32, 32)) -> Path:
    """Generated scenes in carla layout with ``train/``, ``val/`` and ``test/`` folders (a held-out split)."""
    from kdseg.data import write_synth

    for split, n in sizes:
        write_synth(root / split, n=n, size=size, seed=len(split))
    return root


def study_trials(sweep_dir: Path, name: str, storage: str | None = None):
    import optuna

    storage = storage or f"sqlite:///{sweep_dir / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def check_consistent(sweep_dir: Path, name: str, n: int, storage: str | None = None) -> list[dict]:
    """Leaderboard rows = Ray trial folders = Optuna trials (``n`` of each), states, values, controls
    agreeing, none left RUNNING; returns the leaderboard rows. ``storage``: the study's, if not the default."""
    import optuna
    import pytest

    from kdseg.sweep.ranking import read_leaderboard_csv

    rows = read_leaderboard_csv(sweep_dir / "leaderboard.csv")
    ray_trials = sorted(p.name for p in (sweep_dir / "tune").iterdir() if p.is_dir())
    trials = study_trials(sweep_dir, name, storage)
    assert len(rows) == len(ray_trials) == len(trials) == n, (
        [(r["trial_id"], r["status"]) for r in rows],
        ray_trials,
        [(t.number, t.state.name, t.user_attrs.get("ray_trial_id")) for t in trials],
    )
    assert sorted(r["trial_id"] for r in rows) == ray_trials
    assert sorted(t.user_attrs["ray_trial_id"] for t in trials) == ray_trials
    by_id = {t.user_attrs["ray_trial_id"]: t for t in trials}
    expected = {
        "completed": optuna.trial.TrialState.COMPLETE,
        "stopped": optuna.trial.TrialState.PRUNED,
        "error": optuna.trial.TrialState.FAIL,
        "diverged": optuna.trial.TrialState.FAIL,
    }
    for r in rows:
        t = by_id[r["trial_id"]]
        assert t.state == expected[r["status"]], (r, t.state)
        if r["status"] == "stopped":  # ASHA stops keep their per-epoch values as intermediate values
            assert len(t.intermediate_values) == r["epochs"]
        if r["status"] == "completed":  # the study holds the leaderboard's score
            assert t.value == pytest.approx(r["score"])
        assert t.user_attrs.get("kdseg_control", False) == r["control"]
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    return rows


# ------------------------------------------------------------------------------ the shared sweep


@dataclass(frozen=True)
class TinySweep:
    """A finished sweep and how it was run."""

    folder: Path  # holds base.yaml and space.yaml
    space: Path
    out: Path  # --out
    name: str
    sweep_dir: Path  # out / name
    proc: subprocess.CompletedProcess  # the `kdseg sweep` run: returncode, stdout, stderr
    num_samples: int
    max_t: int
    api_key: str  # in the sweep's environment (W&B offline): must appear in nothing it wrote


TINY_SWEEP = {"num_samples": 4, "max_t": 2}


def run_tiny_sweep(kdseg: KdsegCLI, folder: Path, name: str = "tiny") -> TinySweep:
    """4 trials (r34 -> lightweight UNet with searched T and alpha, and its no-KD control) x at most 2
    epochs of 3 steps on 32x32 generated scenes with a test split, on local Ray, run as a user runs it:
    W&B offline with a (fake) API key configured, sample images every epoch, ``final_eval: {top_k: 2}``.

    No quality floor: 2 short epochs teach nobody much, and the tests reading this sweep are about its
    files, its report and its bookkeeping (the floor is tested by ``test_the_winner_is_good...``).
    """
    data = write_split_synth(folder / "data")
    space = write_space(
        folder,
        data,
        base={
            "data": {"image_size": [32, 32]},
            "train": {"batch_size": 4, "max_steps_per_epoch": 3},
            "tracking": {"wandb": {"mode": "auto", "log_images_every": 1}},
        },
        extra_space={"distill.alpha": {"uniform": [0.2, 0.8]}},
        quality_floor=0.0,
        final_eval={"top_k": 2},
        **TINY_SWEEP,
    )
    out = folder / "runs"
    proc = kdseg("sweep", space, "--out", out, "--name", name, env=kdseg.env(WANDB_API_KEY=FAKE_KEY))
    return _tiny(folder, space, name, proc)


def _tiny(folder: Path, space: Path, name: str, proc: subprocess.CompletedProcess) -> TinySweep:
    out = folder / "runs"
    return TinySweep(folder, space, out, name, out / name, proc, api_key=FAKE_KEY, **TINY_SWEEP)


def shared_tiny_sweep(kdseg: KdsegCLI, root: Path) -> TinySweep:
    """:func:`run_tiny_sweep` in ``root/tiny-sweep``, run by whichever pytest-xdist worker asks first (the
    others wait on a file lock, then read how it went from ``run.json``)."""
    from filelock import FileLock

    folder = root / "tiny-sweep"
    record = folder / "run.json"
    with FileLock(str(root / "tiny-sweep.lock")):
        if not record.exists():
            sweep = run_tiny_sweep(kdseg, folder)
            p = sweep.proc
            run = {
                "args": [str(a) for a in p.args],
                "returncode": p.returncode,
                "stdout": p.stdout,
                "stderr": p.stderr,
            }
            record.write_text(json.dumps(run))
    run = json.loads(record.read_text())
    proc = subprocess.CompletedProcess(run["args"], run["returncode"], run["stdout"], run["stderr"])
    return _tiny(folder, folder / "space.yaml", "tiny", proc)
