"""Each benchmark runs with one command and ends with its table and one parseable JSON line.

Smallest settings only: these check that the commands in the README and docs/performance.md work and
print what a reader relies on (the machine and its load, the figures, the targets), not the figures.
The runs that start Ray are marked ``bench`` (about a minute together on a quiet 2-core machine, several
on a busy one): ``pytest -m "not bench"`` leaves them out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run_bench(name: str, *args: str, timeout: float = 800) -> tuple[str, dict]:
    # a guard against a hang, not a speed check: under load (load average 15-20 on 2 cores) a smoke run
    # that takes 40 s quiet was seen to pass 300 s
    # one thread: on a busy 2-core machine two OpenMP threads spin-wait for each other (docs/performance.md)
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=BENCH.parent,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    report = json.loads(lines[-1])  # the last line is the JSON line
    assert report["benchmark"] == name
    machine = report["machine"]
    for key in ("cpu_model", "cpu_count", "torch", "loadavg"):
        assert key in machine, key
    assert proc.stdout.splitlines()[0].startswith("machine: ")
    return proc.stdout, report


def has_table(out: str) -> bool:
    return any(set(ln.strip()) <= {"-", " "} and "--" in ln for ln in out.splitlines())


def test_kd_step_benchmark_compares_kdseg_with_hand_written_loop():
    out, r = run_bench("kd_step", "--size", "32x32", "--batch", "2", "--steps", "1", "--rounds", "1")
    assert "ratio kdseg / hand-written" in out
    assert r["kdseg_ms"] > 0 and r["hand_written_ms"] > 0
    assert abs(r["ratio"] - r["kdseg_ms"] / r["hand_written_ms"]) < 1e-3 and isinstance(r["target_met"], bool)


@pytest.mark.bench  # a real two-trial sweep on local Ray
def test_sweep_packing_benchmark_reports_efficiency(tmp_path):
    out, r = run_bench("sweep_packing", "--trials", "2", "--epochs", "1", "--out", str(tmp_path))
    assert has_table(out)
    packing = r["packing"]
    assert packing["statuses"] == {"completed": 2}
    for key in ("efficiency_tune_span", "efficiency_fit", "efficiency_end_to_end"):
        assert 0.0 < packing[key] <= 1.05, key
    assert (tmp_path / "sweep_packing.json").is_file()  # --out keeps the files


def test_data_benchmark_compares_loader_with_step(tmp_path):
    out, r = run_bench(
        "data",
        *("--size", "32x32", "--batch", "2", "--n", "10", "--workers", "0,1", "--steps", "2"),
        *("--loader-epochs", "1", "--teacher", "resnet18", "--device", "cpu", "--out", str(tmp_path)),
    )
    assert has_table(out) and "wait fraction" in out
    assert "data: 10 scenes of 64x64 generated in" in out and r["settings"]["synth_generate_s"] > 0
    s = r["summary"]
    assert s["step_images_per_s"] > 0 and set(s["loader_images_per_s"]) == {"0", "1"}
    assert 0.0 <= s["wait_fraction"]["1"] <= 1.0 and isinstance(s["target_met"], bool)


@pytest.mark.bench  # Ray start + a trial-like actor
def test_shared_data_memory_benchmark(tmp_path):
    out, r = run_bench(
        "shared_data_memory",
        "--n",
        "4",
        "--size",
        "32x32",
        "--workers",
        "1",
        "--no-private",
        "--out",
        str(tmp_path),
    )
    assert has_table(out)
    row = r["result"]["configs"][0]
    assert row["mode"] == "shared" and row["zero_copy"] is True and row["checksums_agree"] is True
    assert "total_data_mb_shared_1" in r["summary"] and "ray" in r["machine"]


@pytest.mark.bench  # two (one-trial) sweeps
def test_asha_vs_fifo_benchmark_runs_both_arms_on_the_same_configs(tmp_path):
    out, r = run_bench(
        "asha_vs_fifo",
        *("--max-t", "2", "--grace", "1", "--rf", "2", "--lrs", "1e-3", "--alphas", "0.5"),
        *("--concurrency", "1", "--size", "32x32", "--n", "10", "--out", str(tmp_path)),
    )
    assert has_table(out)
    asha, fifo = r["asha"], r["fifo"]
    assert [(t["lr"], t["alpha"]) for t in asha["trials"]] == [(t["lr"], t["alpha"]) for t in fifo["trials"]]
    assert fifo["epochs_total"] == 2 and all(t["epochs"] == 2 for t in fifo["trials"])
    # the replay compares what kdseg's ASHA compared: the score each trial reported every epoch
    assert all(len(t["score_curve"]) == t["epochs"] for t in asha["trials"] + fifo["trials"])
    assert r["replay"]["rungs_compare"] == "score"
    s = r["summary"]
    for key in ("compute_fraction_epochs", "best_gap", "compute_target_met", "best_target_met"):
        assert key in s


def test_asha_vs_fifo_replays_a_grid_of_rung_settings_on_saved_curves(tmp_path):
    # no training: the FIFO curves of an earlier run (here made up) replayed for each (grace, rf)
    trials = [
        {"lr": lr, "alpha": 0.5, "curve": [q * e for e in (1, 2, 3, 4)]}
        for lr, q in ((1e-3, 0.01), (3e-3, 0.03), (1e-2, 0.02), (3e-2, 0.005))
    ]
    earlier = {
        "benchmark": "asha_vs_fifo",
        "machine": {"cpu_model": "x", "loadavg": [0.0, 0.0, 0.0]},
        "settings": {"max_t": 4, "concurrency": 1},
        "fifo": {"trials": trials},
    }
    saved = tmp_path / "earlier.json"
    saved.write_text("a table\n" + json.dumps(earlier) + "\n")
    out, r = run_bench(
        "asha_vs_fifo", "--replay-from", str(saved), "--replay-orders", "5", "--replay-grid", "1:2,4:2"
    )
    assert (
        has_table(out)
        and "chosen (best kept in >= 95% of orders, then the least compute): grace_period" in out
    )
    rows = {(row["grace_period"], row["reduction_factor"]): row for row in r["replay_grid"]}
    assert set(rows) == {(1, 2.0), (4, 2.0)}
    assert rows[(1, 2.0)]["rungs"] == [1, 2, 4]
    # grace = max_t: the only rung is the last epoch, nothing stops early: FIFO's compute, FIFO's best
    assert rows[(4, 2.0)]["compute_fraction_median"] == 1.0 and rows[(4, 2.0)]["best_gap_max"] == 0.0
    # one slot, grace 1, rf 2: the worse half stops at each rung, so less than all of the compute
    assert rows[(1, 2.0)]["compute_fraction_median"] < 1.0
    assert r["replay_chosen"] in r["replay_grid"]
    assert "rungs comparing val_miou (this JSON line has no score curves" in out

    # with the scores the trials reported, the rungs compare those: here the best student scores lowest
    # (as a student of a fast-learning teacher did under the old gap to the floor), so it is stopped
    for t in trials:
        t["score_curve"] = [-v for v in t["curve"]]
    saved.write_text(json.dumps(earlier) + "\n")
    out, r = run_bench(
        "asha_vs_fifo", "--replay-from", str(saved), "--replay-orders", "5", "--replay-grid", "1:2"
    )
    assert "rungs comparing score" in out
    (row,) = r["replay_grid"]
    assert row["rungs_compare"] == "score" and row["best_target_met_share"] < 1.0


@pytest.mark.e2e  # minutes-long scenario, run with -m e2e (keeps the default suite inside CI time)
@pytest.mark.bench  # two two-trial sweeps, one with a teacher stage
def test_teacher_stage_benchmark_trains_the_teacher_once_for_n_students(tmp_path):
    out, r = run_bench(
        "teacher_stage",
        *("--students", "2", "--epochs", "1", "--steps", "1", "--size", "32x32", "--n", "10"),
        *("--teacher", "lightweight_unet", "--out", str(tmp_path)),
    )
    assert has_table(out) and "wall time stage / online" in out
    stage, online = r["stage"], r["online"]
    assert stage["teacher_trainings"] == 1 and online["teacher_trainings"] == 2
    assert stage["statuses"] == online["statuses"] == {"completed": 2}
    assert stage["teacher_s"] > 0 and online["teacher_s"] == 0
    assert abs(r["ratio"] - stage["wall_s"] / online["wall_s"]) < 1e-3


def test_gpu_benchmark_skips_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the benchmark runs instead of skipping")
    out, r = run_bench("gpu")
    assert "no CUDA device" in out and r["skipped"] == "no CUDA device"


@pytest.mark.bench  # the fractional-trials part starts Ray
def test_gpu_benchmark_runs_on_cpu():
    out, r = run_bench(
        "gpu",
        *("--device", "cpu", "--size", "32x32", "--batch", "2", "--steps", "1", "--warmup", "0"),
        *("--teacher", "resnet18", "--variants", "fp32,bf16+cl", "--fractional", "1"),
    )
    assert has_table(out) and "skipped" not in r
    assert [v["variant"] for v in r["variants"]] == ["fp32", "bf16+cl"]
    assert all(v["images_per_s"] > 0 for v in r["variants"])
    assert r["fractional"][0]["trials"] == 1 and r["fractional"][0]["aggregate_images_per_s"] > 0


def test_cli_startup_benchmark_times_every_help():
    out, r = run_bench("cli_startup", "--repeat", "1", "--top", "3")
    assert has_table(out)
    assert {c["command"] for c in r["commands"]} >= {"kdseg --help", "kdseg sweep --help"}
    assert r["heavy_imported"] == []  # what `kdseg --help` answering fast relies on
    # refused configs: exit 2, nothing written, and neither torch nor smp imported to say so
    assert set(r["refused"]) == {"--out a URI", "an unknown encoder"}
    for refusal in r["refused"].values():
        assert refusal["exit"] == [2] and refusal["wrote"] == []
        assert not {"torch", "segmentation_models_pytorch"} & set(refusal["heavy_imported"])


@pytest.mark.parametrize(
    "name",
    [
        "kd_step",
        "sweep_packing",
        "shared_data_memory",
        "asha_vs_fifo",
        "gpu",
        "data",
        "cli_startup",
        "teacher_stage",
    ],
)
def test_every_benchmark_has_its_command_in_the_readme_and_performance_doc(name):
    for doc in (BENCH.parent / "README.md", BENCH.parent / "docs" / "performance.md"):
        assert f"python benchmarks/{name}.py" in doc.read_text(), doc


def test_epoch_overhead_benchmark_compares_checkpoint_io_of_three_versions(tmp_path):
    out, r = run_bench(
        "epoch_overhead",
        *("--no-sweep", "--io-rounds", "1", "--teacher", "resnet18", "--student", "resnet18"),
        *("--out", str(tmp_path)),
    )
    assert has_table(out) and "checkpoint I/O per epoch" in out
    io = r["checkpoint_io"]
    assert set(io["median_s"]) == {"586939f", "scratch", "pointer"} and io["state_mb"] > 0
    assert set(io["ratios"]) == {"scratch/586939f", "pointer/586939f", "pointer/scratch"}
    assert all(v > 0 for v in io["ratios"].values())
    assert set(io["parts"]["pointer"][0]) == {"write_s", "tune_copy_s"}


@pytest.mark.bench  # a one-trial sweep on local Ray
def test_epoch_overhead_benchmark_measures_a_real_trial(tmp_path):
    out, r = run_bench(
        "epoch_overhead",
        *("--epochs", "3", "--n", "10", "--size", "32x32", "--io-rounds", "0"),
        *("--teacher", "resnet18", "--student", "resnet18", "--out", str(tmp_path)),
    )
    assert has_table(out)
    assert [e["epoch"] for e in r["epochs"]] == [1, 2, 3]
    assert r["summary"]["overhead_per_epoch_s"] == r["epochs"][1]["outside_s"]


def test_trial_memory_benchmark_breaks_a_trial_down(tmp_path):
    out, r = run_bench(
        "trial_memory", *("--size", "32x32", "--n", "10", "--epochs", "1", "--concurrent", "1")
    )
    assert has_table(out)
    stages = r["results"]["1"][0]["stages"]
    names = [s["stage"] for s in stages]
    assert names == ["python", "torch", "trial imports", "data", "W&B"] + [
        "  epoch 1: steps + validation",
        "  epoch 1: image hook",
        "  after the last hooks: checkpoints, end",
        "train",
    ]
    # the train stage's peak covers its sub-stages (HardwareMetrics resets VmHWM at every epoch's end)
    assert stages[-1]["peak_mb"] == max(s["peak_mb"] for s in stages[5:])
    s = r["results"]["summary_1"]
    assert s["peak_rss_mb_max"] > 100 and isinstance(s["target_met"], bool)


def test_trial_startup_benchmark_lists_what_a_trial_imports():
    out, r = run_bench("trial_startup", "--configs", "lean", "--repeat", "1", "--top", "5")
    assert has_table(out)
    lean = r["results"]["lean"]
    assert lean["cold_start_median_s"] > 0 and lean["modules"] > 100
    assert "albumentations" not in lean["optional_imported"]  # augmentation off: never imported
    chains = lean["optional_chains"]  # who imports each optional library, from -X importtime's tree
    assert set(chains) <= set(lean["optional_imported"])
    assert any(m.startswith("torchvision") for m in chains["torch._dynamo"]["imported_by"])
