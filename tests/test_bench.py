"""kdseg.deploy.profile and kdseg.deploy.bench: FLOPs against a hand count, latency figures, teacher/student profiles, the cost cache."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from kdseg.cli.bench import add_bench_parser
from kdseg.config import KDConfig, ModelConfig, validate_config
from kdseg.deploy import bench
from kdseg.deploy.bench import bench_config, student_cost
from kdseg.deploy.profile import BenchError, profile_interleaved, profile_model
from kdseg.errors import ConfigError, KdsegError


def small_config(**sections) -> KDConfig:
    doc = {
        "name": "tiny",
        "data": {"format": "synthetic", "image_size": [64, 64], "num_classes": 5},
        # imagenet weights cannot download here: bench must not try
        "teacher": {"arch": "Unet", "encoder": "resnet18", "weights": "imagenet"},
        "student": {"arch": "lightweight_unet", "width": 0.25},
        "distill": {"mode": "online"},
    }
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    return validate_config(doc)


# ------------------------------------------------------------------------------------ profile_model


def test_profile_model_counts_conv_flops_by_hand():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    r = profile_model(conv, size=(32, 32), batch=2, warmup=1, iters=5)
    # FlopCounterMode: a multiply-add is 2 FLOPs; the bias add is not counted
    assert r["flops"] == 2 * 3 * 8 * 9 * 32 * 32
    assert r["gflops"] == pytest.approx(2 * 3 * 8 * 9 * 32 * 32 / 1e9)
    assert r["params"] == 3 * 8 * 9 + 8
    assert 0 < r["latency_ms_p50"] <= r["latency_ms_p95"]
    assert r["images_per_s"] > 0
    assert r["iters"] == 5 and r["warmup"] == 1 and r["batch"] == 2
    assert r["peak_mem_mib"] is None and r["device"] == "cpu"


def test_profile_model_flops_are_per_image_and_dtype_independent():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    a = profile_model(model, size=(32, 32), batch=1, warmup=0, iters=1)
    b = profile_model(model, size=(32, 32), batch=4, warmup=1, iters=2, channels_last=True, bf16=True)
    assert a["flops"] == b["flops"] == 2 * 32 * 32 * (3 * 4 * 9 + 4 * 2)
    assert b["dtype"] == "bf16" and b["channels_last"]


def test_profile_interleaved_times_every_model_alike():
    models = {"a": nn.Conv2d(3, 8, 3, padding=1), "b": nn.Conv2d(3, 4, 1)}
    r = profile_interleaved(models, (32, 32), batch=1, warmup=1, iters=7, rounds=3)
    assert r["a"]["flops"] == 2 * 3 * 8 * 9 * 32 * 32 and r["b"]["flops"] == 2 * 3 * 4 * 32 * 32
    assert r["a"]["iters"] == r["b"]["iters"] == 7
    assert all(0 < p["latency_ms_p50"] <= p["latency_ms_p95"] for p in r.values())


def test_profile_model_rejects_cuda_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BenchError, match="CUDA is not available"):
        profile_model(nn.Conv2d(3, 3, 1), size=(32, 32), device="cuda")


# ------------------------------------------------------------------------------------- bench_config


def test_bench_config_profiles_teacher_and_student_without_downloads():
    result = bench_config(small_config(), size=(32, 32), batch=2, warmup=0, iters=2)
    teacher, student = result["teacher"], result["student"]
    assert teacher["model"] == "Unet/resnet18" and student["model"].startswith("lightweight_unet")
    assert teacher["params"] > student["params"] > 0
    assert teacher["gflops"] > student["gflops"] > 0
    assert result["size"] == [32, 32] and result["batch"] == 2
    assert teacher["iters"] == student["iters"] == 2 and result["rounds"] == 2  # alternating on CPU
    assert result["teacher_over_student"]["params"] == pytest.approx(teacher["params"] / student["params"])
    json.dumps(result)  # the JSON file's content


def test_bench_config_without_teacher_for_mode_none_and_size_override():
    result = bench_config(small_config(distill={"mode": "none"}), warmup=0, iters=1)
    assert "teacher" not in result and "teacher_over_student" not in result
    assert result["student"]["size"] == [64, 64]  # the config's data.image_size


def test_bench_config_rejects_sizes_unets_cannot_take():
    with pytest.raises(BenchError, match="multiple of 32"):
        bench_config(small_config(), size=(48, 50))


# ---------------------------------------------------------------------------------------- the cache


R18 = ModelConfig(arch="Unet", encoder="resnet18")


@pytest.fixture
def counted(monkeypatch):
    """Replace the measurement with a counter (the cache logic is what is tested)."""
    calls = []

    def fake(model_cfg, num_classes, size, device, threads):
        calls.append((model_cfg.arch, num_classes, tuple(size)))
        return {"gflops": 1.5, "latency_ms": 2.5, "params": 1000 + len(calls)}

    monkeypatch.setattr(bench, "_measure_cost", fake)
    return calls


def test_student_cost_is_measured_once_then_cached(tmp_path, counted):
    first = student_cost(R18, 13, (64, 64), cache_dir=tmp_path)
    again = student_cost(R18, 13, (64, 64), cache_dir=tmp_path)
    assert first == again == {"gflops": 1.5, "latency_ms": 2.5, "params": 1001}
    assert len(counted) == 1
    # anything the cost depends on is part of the key
    student_cost(R18, 13, (128, 64), cache_dir=tmp_path)
    student_cost(R18, 7, (64, 64), cache_dir=tmp_path)
    student_cost(ModelConfig(arch="Unet", encoder="resnet34"), 13, (64, 64), cache_dir=tmp_path)
    student_cost(ModelConfig(arch="lightweight_unet", width=0.5), 13, (64, 64), cache_dir=tmp_path)
    student_cost(ModelConfig(arch="lightweight_unet", width=1.0), 13, (64, 64), cache_dir=tmp_path)
    assert len(counted) == 6
    # ... and what it does not depend on is not: weights, checkpoint, the ignored encoder name
    student_cost(R18.model_copy(update={"weights": "imagenet"}), 13, (64, 64), cache_dir=tmp_path)
    student_cost(
        ModelConfig(arch="lightweight_unet", encoder="resnet18", width=0.5), 13, (64, 64), cache_dir=tmp_path
    )
    assert len(counted) == 6
    doc = json.loads((tmp_path / "profile_cache.json").read_text())
    assert len(doc["entries"]) == 6


def test_student_cost_default_cache_is_kdseg_cache(tmp_path, monkeypatch, counted):
    monkeypatch.setenv("KDSEG_CACHE", str(tmp_path / "cache"))
    student_cost(R18, 13, (64, 64))
    assert (tmp_path / "cache" / "profile_cache.json").is_file()


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"entries": {"k": 3}}', ""])
def test_student_cost_survives_a_corrupt_cache(tmp_path, counted, garbage):
    (tmp_path / "profile_cache.json").write_text(garbage)
    assert student_cost(R18, 13, (64, 64), cache_dir=tmp_path)["gflops"] == 1.5
    assert len(counted) == 1
    doc = json.loads((tmp_path / "profile_cache.json").read_text())  # rewritten, valid again
    assert len(doc["entries"]) == 1
    student_cost(R18, 13, (64, 64), cache_dir=tmp_path)
    assert len(counted) == 1


def test_student_cost_entry_with_bad_numbers_is_remeasured(tmp_path, counted):
    student_cost(R18, 13, (64, 64), cache_dir=tmp_path)
    path = tmp_path / "profile_cache.json"
    doc = json.loads(path.read_text())
    for entry in doc["entries"].values():
        entry["gflops"] = "fast"
    path.write_text(json.dumps(doc))
    student_cost(R18, 13, (64, 64), cache_dir=tmp_path)
    assert len(counted) == 2


def test_concurrent_writers_keep_every_entry(tmp_path):
    errors = []

    def writer(i: int) -> None:
        try:
            for j in range(5):
                bench._store(
                    tmp_path / "profile_cache.json", f"k{i}-{j}", {"gflops": 1, "latency_ms": 1, "params": 1}
                )
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entries = json.loads((tmp_path / "profile_cache.json").read_text())["entries"]
    assert len(entries) == 30
    assert not list(tmp_path.glob(".profile_cache.json.*"))  # no temp files left


def test_unwritable_cache_only_warns(tmp_path, counted):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cannot write the profile cache"):
        cost = student_cost(R18, 13, (64, 64), cache_dir=blocker / "sub")
    assert cost["gflops"] == 1.5


def test_student_cost_real_measurement_then_cached(tmp_path, monkeypatch):
    cost = student_cost(R18, 13, (64, 64), cache_dir=tmp_path)
    assert cost["params"] == sum(p.numel() for p in _r18().parameters())
    assert cost["gflops"] > 0.1 and cost["latency_ms"] > 0

    def measured_again(*args, **kwargs):
        raise AssertionError("a cached cost was measured again")

    monkeypatch.setattr(bench, "_measure_cost", measured_again)
    assert student_cost(R18, 13, (64, 64), cache_dir=tmp_path) == cost


def _r18() -> nn.Module:
    from kdseg.models import build_model

    return build_model(R18, 13)


# ------------------------------------------------------------------------------------- the command


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kdseg")
    sub = p.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    return p.parse_args(argv)


def _write_config(tmp_path: Path, **sections) -> Path:
    from kdseg.config import save_config

    return save_config(small_config(**sections), tmp_path / "tiny.yaml")


def test_bench_command_prints_a_table_and_writes_json(tmp_path, capsys):
    cfg = _write_config(tmp_path)
    out = tmp_path / "out" / "b.json"
    args = _parse(["bench", str(cfg), "--size", "32x64", "--device", "cpu", "--warmup", "0", "--iters", "2"])
    args.json_path = str(out)
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "teacher" in text and "student" in text and "GFLOPs" in text and "p95 ms" in text
    doc = json.loads(out.read_text())
    assert doc["teacher"]["gflops"] > doc["student"]["gflops"] > 0
    assert doc["config_file"] == str(cfg.resolve())


def test_bench_command_default_json_name(tmp_path, monkeypatch):
    cfg = _write_config(tmp_path, distill={"mode": "none"})
    monkeypatch.chdir(tmp_path)
    args = _parse(["bench", str(cfg), "--size", "32x32", "--device", "cpu", "--warmup", "0", "--iters", "1"])
    assert args.func(args) == 0
    assert "teacher" not in json.loads((tmp_path / "bench-tiny.json").read_text())


def test_bench_command_errors_are_user_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: {arch: Nope}\n")
    with pytest.raises(ConfigError, match="student.arch"):
        cmd = _parse(["bench", str(bad)])
        cmd.func(cmd)
    if not torch.cuda.is_available():
        cfg = _write_config(tmp_path)
        cmd = _parse(["bench", str(cfg), "--device", "cuda"])
        with pytest.raises(KdsegError, match="CUDA"):
            cmd.func(cmd)
    with pytest.raises(SystemExit):
        _parse(["bench", "x.yaml", "--size", "50x50"])
    assert not list(tmp_path.glob("bench-*.json"))  # nothing written
