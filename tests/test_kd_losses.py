"""Logit-site losses (kl, dist, affinity), the loss registries, the KD ignore mask and CWD's tau.

Each loss is checked against an independent numpy computation written here (loops over pixels,
classes and cell pairs), then through KDObjective, a config, a search space and one train_kd step.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from kdseg.config import DistillConfig, validate_config
from kdseg.distill import FEATURE_LOSSES, KDObjective, cwd_loss
from kdseg.distill import objective as objective_module
from kdseg.distill.logit_losses import (
    LOGIT_LOSSES,
    LogitPair,
    affinity_loss,
    dist_loss,
    get_logit_loss,
    kl_logit_loss,
)
from kdseg.distill.registry import LossRegistry
from kdseg.errors import ConfigError
from tests.conftest import REPO, tiny_config

C = 5  # classes

# ------------------------------------------------------------------------------ numpy references


def np_softmax(x: np.ndarray, temp: float) -> np.ndarray:
    e = np.exp(x / temp - (x / temp).max())
    return e / e.sum()


def np_probs(logits: np.ndarray, temp: float) -> np.ndarray:
    """softmax over the classes of [B, C, H, W], pixel by pixel."""
    out = np.zeros_like(logits)
    b, _, h, w = logits.shape
    for i, y, x in itertools.product(range(b), range(h), range(w)):
        out[i, :, y, x] = np_softmax(logits[i, :, y, x], temp)
    return out


def np_pixels(mask: np.ndarray | None, shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    b, _, h, w = shape
    return [
        (i, y, x)
        for i, y, x in itertools.product(range(b), range(h), range(w))
        if mask is None or mask[i, y, x]
    ]


def np_kl(s: np.ndarray, t: np.ndarray, temp: float, mask: np.ndarray | None = None) -> float:
    pix = np_pixels(mask, s.shape)
    total = 0.0
    for i, y, x in pix:
        p, q = np_softmax(t[i, :, y, x], temp), np_softmax(s[i, :, y, x], temp)
        total += sum(p[k] * math.log(p[k] / q[k]) for k in range(len(p)))
    return total / len(pix) * temp**2


def np_dist(
    s: np.ndarray, t: np.ndarray, temp: float, beta: float, gamma: float, mask: np.ndarray | None = None
) -> float:
    """1 - Pearson r per pixel (over classes) and per class (over the counted pixels of the batch)."""
    q, p = np_probs(s, temp), np_probs(t, temp)
    pix = np_pixels(mask, s.shape)
    inter = np.mean([1.0 - np.corrcoef(q[i, :, y, x], p[i, :, y, x])[0, 1] for i, y, x in pix])
    intra = np.mean(
        [
            1.0 - np.corrcoef([q[i, c, y, x] for i, y, x in pix], [p[i, c, y, x] for i, y, x in pix])[0, 1]
            for c in range(s.shape[1])
        ]
    )
    return temp**2 * (beta * inter + gamma * intra)


def np_affinity(s: np.ndarray, t: np.ndarray, grid: int, mask: np.ndarray | None = None) -> float:
    """Adaptive max-pool cells (PyTorch's bins: floor(i*H/g) .. ceil((i+1)*H/g)), cosine, squared error."""

    def cells(f: np.ndarray, b: int) -> tuple[list[np.ndarray], list[bool]]:
        _, h, w = f.shape
        gh, gw = min(grid, h), min(grid, w)
        vecs, valid = [], []
        for cy, cx in itertools.product(range(gh), range(gw)):
            ys = range(math.floor(cy * h / gh), math.ceil((cy + 1) * h / gh))
            xs = range(math.floor(cx * w / gw), math.ceil((cx + 1) * w / gw))
            inside = [(y, x) for y in ys for x in xs if mask is None or mask[b, y, x]]
            if inside:
                v = np.array([max(f[k, y, x] for y, x in inside) for k in range(f.shape[0])])
                vecs.append(v / np.linalg.norm(v))
            else:
                vecs.append(np.zeros(f.shape[0]))
            valid.append(bool(inside))
        return vecs, valid

    errs = []
    for b in range(s.shape[0]):
        vs, valid = cells(s[b], b)
        vt, _ = cells(t[b], b)
        for i, j in itertools.product(range(len(vs)), repeat=2):
            if valid[i] and valid[j]:
                errs.append((vs[i] @ vs[j] - vt[i] @ vt[j]) ** 2)
    return float(np.mean(errs))


def logits(seed: int, shape=(2, C, 4, 6), scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def a_mask(seed: int, shape=(2, 4, 6)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(*shape, generator=g) > 0.35
    m[0, 0, 0] = m[-1, -1, -1] = True
    return m


# ------------------------------------------------------------------------------- each loss alone


@pytest.mark.parametrize("temp", [1.0, 3.0])
@pytest.mark.parametrize("masked", [False, True])
def test_kl_matches_numpy(temp: float, masked: bool) -> None:
    s, t, m = logits(1), logits(2), a_mask(3) if masked else None
    got = kl_logit_loss(LogitPair(s, t, temp, m)).item()
    want = np_kl(s.numpy(), t.numpy(), temp, None if m is None else m.numpy())
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(("temp", "beta", "gamma"), [(1.0, 1.0, 1.0), (4.0, 2.0, 0.5), (2.0, 0.0, 1.0)])
@pytest.mark.parametrize("masked", [False, True])
def test_dist_matches_numpy(temp: float, beta: float, gamma: float, masked: bool) -> None:
    s, t, m = logits(4), logits(5), a_mask(6) if masked else None
    got = dist_loss(LogitPair(s, t, temp, m), beta=beta, gamma=gamma).item()
    want = np_dist(s.numpy(), t.numpy(), temp, beta, gamma, None if m is None else m.numpy())
    assert got == pytest.approx(want, rel=1e-6)


def test_dist_is_zero_for_a_perfect_student() -> None:
    t = logits(7)
    assert dist_loss(LogitPair(t.clone(), t, 2.0)).item() == pytest.approx(0.0, abs=1e-5)  # float32
    assert dist_loss(LogitPair(logits(8), t, 2.0)).item() > 0.1


@pytest.mark.parametrize(("shape", "grid"), [((2, 3, 4, 6), 2), ((2, 3, 6, 5), 4), ((1, 3, 3, 3), 16)])
@pytest.mark.parametrize("masked", [False, True])
def test_affinity_matches_numpy(shape, grid: int, masked: bool) -> None:
    s, t = logits(9, shape), logits(10, (shape[0], 7, *shape[2:]))  # channels may differ
    m = a_mask(11, (shape[0], *shape[2:])) if masked else None
    got = affinity_loss(s, t, grid, m).item()
    want = np_affinity(s.numpy(), t.numpy(), grid, None if m is None else m.numpy())
    assert got == pytest.approx(want, rel=1e-6)


def test_affinity_ignores_temperature_and_logit_scale() -> None:
    s, t = logits(12), logits(13)
    loss = get_logit_loss("affinity")
    a = loss(LogitPair(s, t, 1.0), grid=3).item()
    assert loss(LogitPair(s * 3.0, t, 7.0), grid=3).item() == pytest.approx(a, rel=1e-9)
    assert loss(LogitPair(t.clone(), t, 1.0), grid=3).item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------ mask


@pytest.mark.parametrize("name", list(LOGIT_LOSSES))
def test_mask_all_true_is_no_mask_and_masked_pixels_do_not_count(name: str) -> None:
    loss = get_logit_loss(name)
    kw = {"grid": 3} if name == "affinity" else {}
    s, t, m = logits(14), logits(15), a_mask(16)
    full = loss(LogitPair(s, t, 2.0), **kw).item()
    assert loss(LogitPair(s, t, 2.0, torch.ones_like(m)), **kw).item() == pytest.approx(full, rel=1e-9)
    masked = loss(LogitPair(s, t, 2.0, m), **kw).item()
    s2, t2 = s.clone(), t.clone()  # change both networks' outputs on the masked-out pixels only
    s2.permute(0, 2, 3, 1)[~m] = logits(17).permute(0, 2, 3, 1)[~m]
    t2.permute(0, 2, 3, 1)[~m] = logits(18).permute(0, 2, 3, 1)[~m] * 5
    assert loss(LogitPair(s2, t2, 2.0, m), **kw).item() == pytest.approx(masked, rel=1e-9)
    assert loss(LogitPair(s2, t2, 2.0), **kw).item() != pytest.approx(full, rel=1e-3)


@pytest.mark.parametrize("name", list(LOGIT_LOSSES))
def test_all_pixels_ignored_gives_a_zero_with_finite_gradient(name: str) -> None:
    s = logits(19).float().requires_grad_()
    kw = {"grid": 3} if name == "affinity" else {}
    out = get_logit_loss(name)(
        LogitPair(s, logits(20).float(), 2.0, torch.zeros(2, 4, 6, dtype=torch.bool)), **kw
    )
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(s.grad).all() and not s.grad.any()


def test_objective_kd_ignore_index_masks_the_ignored_labels_at_the_logits_size() -> None:
    s, t = logits(21).float(), logits(22).float()
    y = torch.randint(0, C, (2, 8, 12), generator=torch.Generator().manual_seed(23))  # labels at 2x
    y[0, :4, :6] = 255
    y[1, 4:, 6:] = 255
    m = torch.ones(2, 4, 6, dtype=torch.bool)
    m[0, :2, :3] = False
    m[1, 2:, 3:] = False
    for name in LOGIT_LOSSES:
        cfg = DistillConfig(logit_loss=name, kd_ignore_index=True, affinity_grid=3, temperature=2.0)
        obj = KDObjective(cfg, C, 255)
        _, parts = obj.student_loss(s, None, t, None, y)
        kw = LOGIT_LOSSES.config_kwargs(name, cfg)
        want = get_logit_loss(name)(LogitPair(s, t, 2.0, m), **kw).item()
        assert parts["soft"] == pytest.approx(want, rel=1e-6), name
        unmasked = KDObjective(cfg.model_copy(update={"kd_ignore_index": False}), C, 255)
        assert unmasked.student_loss(s, None, t, None, y)[1]["soft"] != pytest.approx(want, rel=1e-4), name


def test_kd_ignore_index_default_is_off_and_unchanged() -> None:
    """Existing configs distil on every pixel, ignored labels included (as before the option)."""
    assert DistillConfig().kd_ignore_index is False and DistillConfig().logit_loss == "kl"
    s, t = logits(24).float(), logits(25).float()
    y = torch.full((2, 4, 6), 255)
    obj = KDObjective(DistillConfig(temperature=3.0), C, 255)
    from kdseg.distill import soft_kl

    assert obj.student_loss(s, None, t, None, y)[1]["soft"] == pytest.approx(
        soft_kl(s, t, 3.0).item(), rel=1e-6
    )


# ----------------------------------------------------------------------------- through the objective


@pytest.mark.parametrize("name", list(LOGIT_LOSSES))
@pytest.mark.parametrize("mode", ["online", "mutual"])
def test_gradients_reach_only_the_learner(name: str, mode: str) -> None:
    cfg = DistillConfig(mode=mode, logit_loss=name, affinity_grid=3, kd_ignore_index=True)
    obj = KDObjective(cfg, C, 255)
    y = torch.randint(0, C, (2, 4, 6))
    y[0, 0] = 255
    s = logits(26).float().requires_grad_()
    t = logits(27).float().requires_grad_()
    loss, parts = obj.student_loss(s, None, t, None, y)
    assert parts["soft"] > 0
    (loss - (1 - cfg.alpha) * obj._ce(s, y)).backward()  # the distillation term alone
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    s.grad = None
    t_loss, t_parts = obj.teacher_loss(t, y, s)
    t_loss.backward()
    assert t.grad is not None and s.grad is None
    if mode == "mutual":
        assert t_parts["soft"] > 0


@pytest.mark.parametrize("name", list(LOGIT_LOSSES))
def test_step_loss_shares_one_log_softmax_per_network(name: str, monkeypatch) -> None:
    """mutual + entropy: the student's term, the teacher's mutual term and entropy share the softmaxes."""
    from kdseg.distill import logit_losses

    calls = []
    real = objective_module.log_probs

    def counting(x, temp):
        calls.append(tuple(x.shape))
        return real(x, temp)

    monkeypatch.setattr(objective_module, "log_probs", counting)
    monkeypatch.setattr(logit_losses, "log_probs", counting)
    cfg = DistillConfig(mode="mutual", logit_loss=name, teacher_entropy=0.2, alpha=0.4, affinity_grid=3)
    obj = KDObjective(cfg, C, 255)
    s0, t0 = logits(28).float(), logits(29).float()
    y = torch.randint(0, C, (2, 4, 6))
    s, t = s0.clone().requires_grad_(), t0.clone().requires_grad_()
    loss, parts = obj.step_loss(s, None, t, None, y, student_learns=True, teacher_learns=True)
    loss.backward()
    assert len(calls) == (1 if name == "affinity" else 2)  # affinity: only the teacher's entropy
    calls.clear()
    s2, t2 = s0.clone().requires_grad_(), t0.clone().requires_grad_()
    l_s, p_s = obj.student_loss(s2, None, t2, None, y)
    l_t, p_t = obj.teacher_loss(t2, y, s2)
    (l_s + l_t).backward()
    assert loss.item() == pytest.approx((l_s + l_t).item(), rel=1e-6)
    assert parts == pytest.approx({**p_s, **{f"teacher_{k}": v for k, v in p_t.items()}}, rel=1e-6)
    torch.testing.assert_close(s.grad, s2.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(t.grad, t2.grad, rtol=1e-5, atol=1e-8)


def test_cwd_temperature_reaches_the_feature_loss() -> None:
    cfg = DistillConfig(sites=["decoder"], feature_loss="cwd", cwd_temperature=2.5)
    shapes = {"decoder": [(4, 6, 6)]}
    obj = KDObjective(cfg, C, 255, None, shapes, shapes)
    assert obj.feature_loss_kwargs == {"tau": 2.5}
    g = torch.Generator().manual_seed(30)
    sf, tf = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    y = torch.zeros(2, 6, 6, dtype=torch.long)
    _, parts = obj.student_loss(torch.zeros(2, C, 6, 6), {"decoder": sf}, None, {"decoder": tf}, y)
    assert parts["feature"] == pytest.approx(cwd_loss(sf, tf, tau=2.5).item(), rel=1e-6)
    assert cwd_loss(sf, tf, tau=2.5).item() != pytest.approx(cwd_loss(sf, tf).item(), rel=1e-3)
    # an explicit kwarg still wins over the config
    assert KDObjective(cfg, C, 255, None, shapes, shapes, {"tau": 4.0}).feature_loss_kwargs == {"tau": 4.0}


def test_affinity_feature_loss_uses_the_grid_key() -> None:
    cfg = DistillConfig(sites=["decoder"], feature_loss="affinity", affinity_grid=2)
    shapes = {"decoder": [(4, 6, 6)]}
    obj = KDObjective(cfg, C, 255, None, shapes, shapes)
    assert obj.feature_loss_kwargs == {"grid": 2}
    g = torch.Generator().manual_seed(31)
    sf, tf = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    assert FEATURE_LOSSES["affinity"](sf, tf, grid=2).item() == pytest.approx(
        np_affinity(sf.double().numpy(), tf.double().numpy(), 2), rel=1e-5
    )


# ------------------------------------------------------------------------------ registry and config


def test_config_names_are_the_registries() -> None:
    fields = DistillConfig.model_fields
    # the names read from source without importing torch are the names the decorators registered
    assert LOGIT_LOSSES.names() == tuple(LOGIT_LOSSES) == ("kl", "dist", "affinity")
    assert FEATURE_LOSSES.names() == tuple(FEATURE_LOSSES) == ("mse", "cosine", "cwd", "affinity")
    for name in LOGIT_LOSSES.names():
        assert DistillConfig(logit_loss=name).logit_loss == name
    for name in FEATURE_LOSSES.names():
        assert DistillConfig(feature_loss=name).feature_loss == name
    with pytest.raises(ValidationError, match="unknown logit loss 'kll'; known: kl, dist, affinity"):
        DistillConfig(logit_loss="kll")
    with pytest.raises(ValidationError, match="unknown feature loss 'l1'; known: mse, cosine, cwd, affinity"):
        DistillConfig(feature_loss="l1")
    for registry in (LOGIT_LOSSES, FEATURE_LOSSES):
        for name, options in registry.options.items():
            assert set(options.values()) <= set(fields), (name, options)  # every option is a config key


def test_a_loss_registered_at_run_time_is_selectable() -> None:
    @FEATURE_LOSSES.register("toy_l1")
    def toy_l1(student, teacher):
        return (student - teacher).abs().mean()

    try:
        assert "toy_l1" in FEATURE_LOSSES.names()
        assert DistillConfig(feature_loss="toy_l1").feature_loss == "toy_l1"
    finally:
        FEATURE_LOSSES._entries.pop("toy_l1")
        FEATURE_LOSSES.options.pop("toy_l1")
    with pytest.raises(ValidationError, match="unknown feature loss 'toy_l1'"):
        DistillConfig(feature_loss="toy_l1")


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    reg = LossRegistry("toy")

    @reg.register("a", scale="alpha")
    def a(x, scale=1.0):
        return x * scale

    assert reg["a"] is a and reg.config_kwargs("a", DistillConfig(alpha=0.25)) == {"scale": 0.25}
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(a)
    with pytest.raises(ValueError, match="unknown toy loss 'b'; known: a"):
        reg.get_loss("b")


def test_config_keys_validate_and_name_the_key() -> None:
    doc = tiny_config(Path("/nowhere"), data={"format": "synthetic", "root": None})
    cfg = validate_config(
        {**doc, "distill": {**doc["distill"], "logit_loss": "dist", "cwd_temperature": 2.0}}
    )
    assert cfg.distill.logit_loss == "dist" and cfg.distill.cwd_temperature == 2.0
    for key, value, msg in [
        ("logit_loss", "pkd", "unknown logit loss 'pkd'; known: kl, dist, affinity"),
        ("cwd_temperature", 0, "greater than 0"),
        ("affinity_grid", 64, "less than or equal to 32"),
        ("dist_beta", -1, "greater than or equal to 0"),
    ]:
        with pytest.raises(ConfigError) as info:
            validate_config({**doc, "distill": {**doc["distill"], key: value}}, source="x.yaml")
        assert f"x.yaml: distill.{key}: " in str(info.value) and msg in str(info.value), str(info.value)


def test_logit_loss_and_cwd_temperature_are_searchable(tmp_path: Path) -> None:
    from kdseg.sweep.space import load_space, trial_config

    (tmp_path / "base.yaml").write_text(
        textwrap.dedent(
            """
            data: {format: synthetic, num_classes: 5, image_size: [64, 64], synth: {n: 8, size: [64, 64]}}
            distill: {mode: online, sites: [logits, decoder], feature_loss: cwd}
            train: {epochs: 2, batch_size: 4, num_workers: 0}
            """
        )
    )
    space = """
        base: base.yaml
        space:
          distill.logit_loss: {choice: [kl, dist, affinity]}
          distill.cwd_temperature: {loguniform: [0.5, 4.0]}
          distill.kd_ignore_index: {choice: [false, true]}
        sweep: {num_samples: 2, asha: {max_t: 2, grace_period: 1}}
        """
    (tmp_path / "space.yaml").write_text(textwrap.dedent(space))
    spec = load_space(tmp_path / "space.yaml")
    params = {
        "distill.logit_loss": "affinity",
        "distill.cwd_temperature": 2.0,
        "distill.kd_ignore_index": True,
    }
    cfg = trial_config(spec, params)
    assert (cfg.distill.logit_loss, cfg.distill.cwd_temperature, cfg.distill.kd_ignore_index) == (
        "affinity",
        2.0,
        True,
    )
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(space).replace("affinity]", "pkd]"))
    with pytest.raises(ConfigError, match="distill.logit_loss"):
        load_space(tmp_path / "bad.yaml")


def test_config_imports_before_distill_in_a_fresh_interpreter() -> None:
    """kdseg.config imports the registries of kdseg.distill, which must not import kdseg.config back."""
    for first, second in [("kdseg.config", "kdseg.distill"), ("kdseg.distill", "kdseg.config")]:
        code = f"import {first}, {second}; print({second}.__name__)"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
        )
        assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------------------- one training step


@pytest.mark.parametrize(
    "distill",
    [
        {"mode": "mutual", "logit_loss": "dist", "kd_ignore_index": True, "dist_gamma": 2.0},
        {
            "logit_loss": "affinity",
            "affinity_grid": 8,
            "sites": ["decoder", "logits"],
            "feature_loss": "affinity",
        },
        {
            "sites": ["bottleneck", "logits"],
            "feature_loss": "cwd",
            "cwd_temperature": 4.0,
            "kd_ignore_index": True,
        },
    ],
    ids=["dist-mutual-masked", "affinity-both-sites", "cwd-tau"],
)
def test_train_kd_one_step(synth_dir, distill) -> None:
    from kdseg.data import load_data
    from kdseg.train import train_kd

    cfg = validate_config(
        tiny_config(
            synth_dir,
            teacher={"arch": "Unet", "encoder": "resnet18"},
            student={"arch": "lightweight_unet", "width": 0.5},
            distill=distill,
        )
    )
    cfg.train.max_steps_per_epoch = 1
    last = train_kd(cfg, load_data(cfg.data))
    assert math.isfinite(last["train_loss"]) and last["train_loss_soft"] > 0
    if len(cfg.distill.sites) > 1:
        assert last["train_loss_feature"] > 0
    if cfg.distill.mode == "mutual":
        assert math.isfinite(last["teacher_train_loss"])
