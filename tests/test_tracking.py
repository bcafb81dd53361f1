"""W&B tracking (mode choice, offline runs, failures never stop training) and the image hooks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kdseg.tracking import mode as tracking
from kdseg.tracking.images import EpochImages, fixed_indices
from kdseg.tracking.mode import api_key_configured, resolve_mode
from kdseg.tracking.mosaic import colorize
from kdseg.tracking.panels import layer_rows, layers_figure, prediction_figure
from kdseg.tracking.run import WandbRun, run_id_for, search_column
from kdseg.tracking.wandb_records import offline_runs, read_offline_run, sync_command
from tests.conftest import tiny_config

FAKE_KEY = "kdsegfake" + "0123456789abcdef" * 2  # never a real key; must not appear in any file


def _cfg(synth_dir: Path, **sections):
    from kdseg.config import validate_config

    return validate_config(tiny_config(synth_dir, **sections), source="test")


# ------------------------------------------------------------------------------------------- mode


@pytest.mark.parametrize(
    ("config_mode", "env", "expected"),
    [
        ("disabled", {"WANDB_MODE": "online", "WANDB_API_KEY": FAKE_KEY}, "disabled"),
        ("auto", {}, "offline"),
        ("auto", {"WANDB_API_KEY": FAKE_KEY}, "online"),
        ("online", {}, "offline"),  # no key: never try to log in
        ("online", {"WANDB_API_KEY": FAKE_KEY}, "online"),
        ("offline", {"WANDB_API_KEY": FAKE_KEY}, "offline"),
        ("auto", {"WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY}, "offline"),
        ("auto", {"WANDB_MODE": "dryrun", "WANDB_API_KEY": FAKE_KEY}, "offline"),
        ("online", {"WANDB_MODE": "disabled", "WANDB_API_KEY": FAKE_KEY}, "disabled"),
        ("auto", {"WANDB_DISABLED": "true", "WANDB_API_KEY": FAKE_KEY}, "disabled"),
        ("offline", {"WANDB_MODE": "online", "WANDB_API_KEY": FAKE_KEY}, "online"),  # explicit env wins
    ],
)
def test_resolve_mode(config_mode, env, expected, tmp_path):
    env = {"NETRC": str(tmp_path / "none"), "WANDB_CONFIG_DIR": str(tmp_path), **env}
    mode, reason = resolve_mode(config_mode, env)
    assert mode == expected, reason
    assert FAKE_KEY not in reason


def test_api_key_from_netrc(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    assert api_key_configured({"NETRC": str(netrc)})
    assert not api_key_configured({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.com"})
    assert not api_key_configured({"NETRC": str(tmp_path / "missing"), "WANDB_CONFIG_DIR": str(tmp_path)})
    (tmp_path / "settings").write_text(f"[default]\napi_key = {FAKE_KEY}\n")
    assert api_key_configured({"NETRC": str(tmp_path / "missing"), "WANDB_CONFIG_DIR": str(tmp_path)})


def test_online_with_server_unreachable_falls_back_at_once(tmp_path, synth_dir, monkeypatch):
    """W&B unreachable: one 3 s probe per sweep (remembered), then offline; training never waits."""
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    import inspect

    import wandb

    probes, inits = [], []
    real_probe, real_init = tracking.server_reachable, wandb.init

    def probe(*args, **kwargs):
        bound = inspect.signature(real_probe).bind(*args, **kwargs)
        bound.apply_defaults()
        probes.append(bound.arguments["timeout"])  # the seconds this probe may wait
        return real_probe(*args, **kwargs)

    def init(*args, **kwargs):
        inits.append(kwargs["mode"])
        return real_init(*args, **kwargs)

    monkeypatch.setattr(tracking, "server_reachable", probe)
    monkeypatch.setattr(wandb, "init", init)
    cfg = _cfg(synth_dir, tracking={"wandb": {"mode": "online"}})
    run = WandbRun(cfg, tmp_path / "a", state_dir=tmp_path).open()
    try:
        assert run.mode == "offline" and "unreachable" in run.reason
        assert (tmp_path / tracking.UNREACHABLE_MARKER).exists()
    finally:
        run.finish()
    run2 = WandbRun(cfg, tmp_path / "b", state_dir=tmp_path).open()
    run2.finish()
    assert run2.mode == "offline" and "unreachable earlier in this sweep" in run2.reason
    # one short probe for the sweep, never an online init that could wait on the server
    assert len(probes) == 1 and 0 < probes[0] <= 3
    assert inits == ["offline", "offline"]
    assert offline_runs(tmp_path / "a") and offline_runs(tmp_path / "b")


def test_wandb_failure_never_breaks_training(tmp_path, synth_dir, monkeypatch):
    import wandb

    def broken_init(*a, **k):
        raise RuntimeError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = _cfg(synth_dir, tracking={"wandb": {"mode": "offline"}})
    with WandbRun(cfg, tmp_path) as run:
        assert run.mode == "disabled" and not run.active
        run.log_epoch({"epoch": 1, "val_miou": 0.5})  # a no-op, no exception
    assert run.status == "completed"


def test_names_and_sync_command(tmp_path):
    assert search_column("distill.alpha") == "distill_alpha" and search_column("pair") == "pair"
    assert run_id_for("my sweep/1", "abc_00001") == "my-sweep-1-abc_00001"
    assert len(run_id_for("x" * 100, "t")) <= 64
    assert sync_command(tmp_path) is None
    for trial in ("t1", "t2"):
        (tmp_path / "tune" / trial / "wandb" / f"offline-run-2026-{trial}").mkdir(parents=True)
    cmd = sync_command(tmp_path)
    assert cmd == f"wandb sync {tmp_path}/tune/*/wandb/offline-run-*"


# ------------------------------------------------------------------------------------ pictures


def test_colorize_and_fixed_indices():
    palette = np.array([[10, 20, 30], [200, 100, 0]], dtype=np.uint8)
    out = colorize(np.array([[0, 1], [255, 7]], dtype=np.uint8), palette, ignore_index=255)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [200, 100, 0]
    assert out[1, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [0, 0, 0]
    assert (
        fixed_indices(10, 4) == [0, 3, 6, 9] and fixed_indices(2, 4) == [0, 1] and fixed_indices(0, 4) == []
    )


def test_layer_rows_pair_from_the_deepest_stage_and_figures_render():
    from kdseg.tracking.panels import ModelView

    rng = torch.Generator().manual_seed(0)
    t_enc = [torch.rand(2, c, s, s, generator=rng) for c, s in ((8, 16), (16, 8), (32, 4), (64, 2))]
    s_enc = [torch.rand(2, c, s, s, generator=rng) for c, s in ((4, 16), (8, 8))]
    t = ModelView(
        torch.rand(2, 5, 16, 16), {"encoder": t_enc, "bottleneck": [t_enc[-1]], "decoder": [t_enc[0]]}
    )
    s = ModelView(
        torch.rand(2, 5, 16, 16),
        {"encoder": s_enc, "bottleneck": [torch.rand(2, 8, 4, 4)], "decoder": [s_enc[0]]},
    )
    rows = layer_rows(t, s, ["encoder", "bottleneck", "decoder", "logits"], distilled=["encoder", "logits"])
    labels = [r.label for r in rows]
    # teacher stages 1-2 have no student partner; student 1-2 pair with teacher 3-4 (the deepest)
    assert labels[:4] == ["encoder T1/4", "encoder T2/4", "encoder T3/4 S1/2", "encoder T4/4 S2/2"]
    assert rows[2].teacher is t_enc[2] and rows[2].student is s_enc[0] and rows[2].distilled
    assert not rows[0].distilled and rows[0].student is None
    assert [r.site for r in rows[4:]] == ["bottleneck", "decoder", "logits"]
    palette = np.random.default_rng(0).integers(0, 255, (5, 3)).astype(np.uint8)
    names = [f"c{i}" for i in range(5)]
    img = np.zeros((16, 16, 3), np.uint8)
    fig = layers_figure(rows, img, np.zeros((16, 16), np.uint8), palette, names, title="t")
    assert fig.get_size_inches()[1] > 3
    preds = np.zeros((2, 16, 16), np.uint8)
    prediction_figure(np.zeros((2, 16, 16, 3), np.uint8), preds, None, preds, palette, names)


def test_mosaic_draws_each_tile_at_its_pixels_without_a_figure_sized_image(tmp_path):
    """Each tile lands exactly on its pixels, and no image as big as the figure is drawn (matplotlib would
    resample it through float RGBA arrays of the whole figure: ~95 MB at the quickstart's layer panel)."""
    from PIL import Image

    from kdseg.tracking.mosaic import Mosaic, Tile, save_png

    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 255, (20, 30, 3)).astype(np.uint8) for _ in range(6)]
    m = Mosaic(3, (20, 30), label_width=40)
    m.add_row("a", [Tile(t, f"t{i}") for i, t in enumerate(tiles[:3])])
    m.add_row("b", [Tile(tiles[3]), Tile(None, note="n"), Tile(tiles[5], cmap=None)])
    fig = m.figure("title", subtitle="key")
    drawn = [im.get_array().shape[:2] for im in fig.axes[0].images]
    assert drawn and all(shape == (20, 30) for shape in drawn)  # tiles, and the grey of the note
    png = np.asarray(Image.open(save_png(fig, tmp_path / "m.png")))[..., :3]
    assert png.shape[:2] == (m.height, 40 + 3 * 34 + 4)
    head = 18 + 12  # title, one subtitle line
    for k, t in enumerate(tiles):
        if k == 4:
            continue
        r, c = divmod(k, 3)
        y0, x0 = head + r * (20 + 14 + 4) + 14, 40 + c * 34 + 4
        assert np.array_equal(png[y0 : y0 + 20, x0 : x0 + 30], t), k


def test_epoch_images_hook_restores_modes_and_writes_pngs(tmp_path, synth_dir):
    from kdseg.data import load_data
    from kdseg.models import build_model
    from kdseg.train import EpochContext

    cfg = _cfg(
        synth_dir,
        student={"arch": "lightweight_unet", "width": 0.25},
        distill={"sites": ["logits", "decoder"]},
        train={"epochs": 3},
    )
    data = load_data(cfg.data)
    student = build_model(cfg.student, data.num_classes, role="student").train()
    teacher = build_model(cfg.teacher, data.num_classes, role="teacher").train()
    teacher.encoder.eval()  # mixed modes must come back exactly
    modes = {id(m): m.training for net in (student, teacher) for m in net.modules()}
    params = {k: v.clone() for k, v in student.state_dict().items()}
    hook = EpochImages(every=2, num_images=2)
    assert [e for e in range(1, 8) if hook.due(e, 7)] == [1, 2, 4, 6, 7]
    metrics = {"val_miou": 0.1}
    for epoch in (1, 2, 3):
        hook(EpochContext(cfg, epoch, metrics, student, teacher, data, torch.device("cpu"), tmp_path))
    assert {m.training for m in student.modules()} == {True}
    assert all(m.training == modes[id(m)] for net in (student, teacher) for m in net.modules())
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in params.items())
    pngs = sorted(p.name for p in (tmp_path / "images").glob("*.png"))
    assert pngs == [f"epoch_00{e}_{k}.png" for e in (1, 2, 3) for k in ("layers", "predictions")]
    for p in (tmp_path / "images").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert set(metrics) >= {
        "layer_sim_encoder",
        "layer_sim_bottleneck",
        "layer_sim_decoder",
        "layer_sim_logits",
    }
    classes = json.loads((tmp_path / "images" / "classes.json").read_text())
    assert classes["class_names"] == data.class_names and len(classes["palette"]) == data.num_classes


# ------------------------------------------------------------------------------ a real offline run


def _finished_offline_run(folder, wait_s: float = 60.0):
    """The offline run read back once its exit record is on disk: ``run.finish()`` returns when wandb-core
    has handled the exit, and its writer may append the record a moment later (seen once on a loaded
    machine). A hang guard, not a timing check: the run is read as it is after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    wb = read_offline_run(folder)
    while not wb.exited and time.monotonic() < deadline:
        time.sleep(0.5)
        wb = read_offline_run(folder)
    return wb


def test_train_run_logs_offline_and_never_writes_the_key(tmp_path, synth_dir, monkeypatch):
    """A tiny ``train_kd`` run as ``kdseg train`` runs it: one offline W&B run with every logged key."""
    from kdseg.data import load_data
    from kdseg.layout import read_metrics
    from kdseg.train import train_kd

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)  # configured, but WANDB_MODE=offline (conftest) wins
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = _cfg(
        synth_dir,
        student={"arch": "lightweight_unet", "width": 0.25},
        train={"epochs": 2, "max_steps_per_epoch": 1, "batch_size": 4},
        tracking={"wandb": {"mode": "auto", "log_images_every": 1}},
    )
    data = load_data(cfg.data)
    out = tmp_path / "run"
    with WandbRun(cfg, out, class_names=data.class_names) as run:
        assert run.mode == "offline" and run.active
        train_kd(cfg, data, run.wrap(), run_dir=out, hooks=run.hooks)
    assert run.status == "completed" and "wandb sync" in run.describe()

    rows = read_metrics(out)
    assert len(rows) == 2 and all(r["peak_rss_mb"] > 0 and r["images_per_s"] > 0 for r in rows)
    assert all(f"layer_sim_{s}" in rows[0] for s in ("encoder", "decoder", "logits"))
    for epoch in (1, 2):
        for kind in ("predictions", "layers"):
            assert (out / "images" / f"epoch_{epoch:03d}_{kind}.png").stat().st_size > 0

    (folder,) = offline_runs(out)
    wb = _finished_offline_run(folder)
    assert wb.exited and wb.exit_code == 0
    assert wb.config["distill"]["temperature"] == cfg.distill.temperature and "hardware" in wb.config
    assert [h["epoch"] for h in wb.history] == [1, 2]
    assert {
        "val_miou",
        "student_params",
        "iou_per_mparam",
        "teacher_val_miou",
        "images_per_s",
        "peak_rss_mb",
    } <= set(wb.history[-1])
    assert any(k.startswith("student_iou/") for k in wb.history[-1])
    assert any(k.startswith("images/predictions") for k in wb.history[-1])
    for key in ("val_miou", "student_params", "iou_per_mparam", "teacher_val_miou"):
        assert wb.summary[key] == pytest.approx(rows[-1][key])
    assert wb.summary["status"] == "completed"
    assert wb.stats, "W&B system metrics are on"

    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_online_init_failure_falls_back_offline_and_is_remembered(tmp_path, synth_dir, monkeypatch):
    import wandb

    real_init = wandb.init
    calls = []

    def init(*args, **kwargs):
        calls.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("server said no")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(tracking, "server_reachable", lambda *a, **k: True)
    cfg = _cfg(synth_dir, tracking={"wandb": {"mode": "online"}})
    with WandbRun(cfg, tmp_path / "a", state_dir=tmp_path, mode="online") as run:
        assert run.mode == "offline" and run.active and "online init failed" in run.reason
    with WandbRun(cfg, tmp_path / "b", state_dir=tmp_path, mode="online") as run:
        assert run.mode == "offline"
    assert calls == ["online", "offline", "offline"]  # the second run did not try online again
