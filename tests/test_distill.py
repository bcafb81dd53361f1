"""Unit tests of kdseg.distill: each loss against an independent computation, and the objective."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdseg.config import DistillConfig
from kdseg.distill import (
    FEATURE_LOSSES,
    FeatureAdapters,
    KDObjective,
    Phase,
    cosine_loss,
    cwd_loss,
    hard_loss,
    mse_loss,
    pair_indices,
    phase_for,
    soft_kl,
    softmax_entropy,
)

# ----------------------------------------------------------------------------- numpy references


def np_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def np_soft_kl(s: np.ndarray, t: np.ndarray, temp: float) -> float:
    """Explicit loop over pixels: sum_c p log(p / q), mean over B*H*W, times T^2."""
    b, c, h, w = s.shape
    total = 0.0
    for i, y, x in itertools.product(range(b), range(h), range(w)):
        p = np.exp(t[i, :, y, x] / temp) / np.exp(t[i, :, y, x] / temp).sum()
        q = np.exp(s[i, :, y, x] / temp) / np.exp(s[i, :, y, x] / temp).sum()
        total += sum(p[k] * math.log(p[k] / q[k]) for k in range(c))
    return total / (b * h * w) * temp**2


# ------------------------------------------------------------------------------------ soft loss


@pytest.mark.parametrize("temp", [0.5, 1.0, 2.0, 4.0, 7.5])
def test_soft_kl_matches_explicit_loop(temp: float) -> None:
    g = torch.Generator().manual_seed(int(temp * 10))
    s = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64) * 3
    t = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64) * 3
    got = soft_kl(s, t, temp).item()
    assert got == pytest.approx(np_soft_kl(s.numpy(), t.numpy(), temp), rel=1e-5)


def test_soft_kl_zero_for_identical_logits() -> None:
    x = torch.randn(2, 7, 5, 5)
    assert soft_kl(x, x.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.filterwarnings("ignore:reduction:UserWarning")
def test_soft_kl_is_kldivloss_mean_times_num_classes() -> None:
    temp, c = 3.0, 6
    s, t = torch.randn(2, c, 4, 4), torch.randn(2, c, 4, 4)
    kldiv = nn.KLDivLoss(reduction="mean")(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1)) * temp**2
    ours = soft_kl(s, t, temp)
    assert ours.item() == pytest.approx(kldiv.item() * c, rel=1e-5)
    assert ours.item() != pytest.approx(kldiv.item(), rel=1e-2)


def test_soft_kl_gradient_only_to_student_when_teacher_detached() -> None:
    s = torch.randn(2, 4, 3, 3, requires_grad=True)
    t = torch.randn(2, 4, 3, 3, requires_grad=True)
    soft_kl(s, t.detach(), 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    # without detaching, both sides get a gradient (the caller decides)
    s.grad = None
    soft_kl(s, t, 2.0).backward()
    assert s.grad is not None and t.grad is not None


def test_soft_kl_resizes_student_to_teacher() -> None:
    s, t = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 8, 8)
    up = F.interpolate(s, size=(8, 8), mode="bilinear", align_corners=False)
    assert soft_kl(s, t, 2.0).item() == pytest.approx(soft_kl(up, t, 2.0).item(), rel=1e-6)


# ------------------------------------------------------------------------------------ hard loss


def np_ce(logits: np.ndarray, target: np.ndarray, ignore: int, weights: np.ndarray | None) -> float:
    b, c, h, w = logits.shape
    num = den = 0.0
    for i, y, x in itertools.product(range(b), range(h), range(w)):
        k = int(target[i, y, x])
        if k == ignore:
            continue
        wk = 1.0 if weights is None else float(weights[k])
        num += -wk * np_log_softmax(logits[i, :, y, x], 0)[k]
        den += wk
    return num / den


@pytest.mark.parametrize("weighted", [False, True])
def test_hard_loss_matches_manual(weighted: bool) -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, :2] = 255
    target[1, -1, -3:] = 255
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0]) if weighted else None
    got = hard_loss(logits, target, 255, weights).item()
    want = np_ce(logits.numpy(), target.numpy(), 255, None if weights is None else weights.numpy())
    assert got == pytest.approx(want, rel=1e-5)


def test_hard_loss_all_ignored_is_zero_with_grad() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    for weights in (None, torch.ones(3)):
        loss = hard_loss(logits, target, 255, weights)
        assert loss.item() == 0.0 and not torch.isnan(loss)
        loss.backward()
        assert logits.grad is not None and torch.all(logits.grad == 0)


# --------------------------------------------------------------------------------- feature losses


def test_mse_and_cosine_match_manual() -> None:
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    t = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    sn, tn = s.numpy(), t.numpy()
    assert mse_loss(s, t).item() == pytest.approx(((sn - tn) ** 2).mean(), rel=1e-6)
    cos = []
    for i, y, x in itertools.product(range(2), range(3), range(3)):
        a, b = sn[i, :, y, x], tn[i, :, y, x]
        cos.append(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine_loss(s, t).item() == pytest.approx(np.mean(cos), rel=1e-6)
    assert cosine_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_loss(2 * t, t).item() == pytest.approx(0.0, abs=1e-6)  # scale-invariant


def test_cwd_hand_computed_example() -> None:
    # channel 0: teacher [0, 0] -> p = [1/2, 1/2]; student [0, ln 3] -> q = [1/4, 3/4]
    # KL = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3); channel 1 identical -> 0; mean over 2 channels.
    t = torch.tensor([[[[0.0, 0.0]], [[1.0, 2.0]]]])
    s = torch.tensor([[[[0.0, math.log(3)]], [[1.0, 2.0]]]])
    assert cwd_loss(s, t).item() == pytest.approx(0.25 * math.log(4 / 3), rel=1e-6)
    # tau = 2 with doubled logits: same distributions, times tau^2 = 4
    assert cwd_loss(2 * s, 2 * t, tau=2.0).item() == pytest.approx(math.log(4 / 3), rel=1e-6)


def test_cwd_matches_numpy_on_random_maps() -> None:
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    t = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    tau = 1.5
    vals = []
    for i, c in itertools.product(range(2), range(3)):
        lp = np_log_softmax(t[i, c].numpy().ravel() / tau, 0)
        lq = np_log_softmax(s[i, c].numpy().ravel() / tau, 0)
        vals.append((np.exp(lp) * (lp - lq)).sum() * tau**2)
    assert cwd_loss(s, t, tau=tau).item() == pytest.approx(np.mean(vals), rel=1e-6)


def test_feature_registry_and_shape_check() -> None:
    assert set(FEATURE_LOSSES) == {"mse", "cosine", "cwd", "affinity"}
    for fn in FEATURE_LOSSES.values():
        with pytest.raises(ValueError, match="same shape"):
            fn(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, 3))


# -------------------------------------------------------------------------------------- adapters


def test_pair_indices_align_from_deepest() -> None:
    assert pair_indices(3, 5) == [(0, 2), (1, 3), (2, 4)]
    assert pair_indices(6, 6) == [(i, i) for i in range(6)]
    assert pair_indices(4, 1) == [(3, 0)]


def test_adapters_map_channels_and_sizes() -> None:
    student = {"encoder": [(64, 16, 16), (128, 8, 8)], "bottleneck": [(128, 8, 8)]}
    teacher = {"encoder": [(3, 32, 32), (256, 8, 8), (128, 4, 4)], "bottleneck": (128, 4, 4)}
    ad = FeatureAdapters(student, teacher)
    assert ad.sites == ("encoder", "bottleneck")
    assert ad.pairs("encoder") == [(0, 1), (1, 2)]
    assert isinstance(ad.layers["encoder_0"], nn.Conv2d)
    assert isinstance(ad.layers["encoder_1"], nn.Identity)
    assert isinstance(ad.layers["bottleneck_0"], nn.Identity)
    assert sum(p.numel() for p in ad.parameters()) == 64 * 256  # one bias-free 1x1 conv
    out = ad("encoder", 0, torch.randn(2, 64, 16, 16), torch.randn(2, 256, 8, 8))
    assert out.shape == (2, 256, 8, 8)
    x = torch.randn(2, 128, 8, 8)
    out = ad("encoder", 1, x, torch.randn(2, 128, 4, 4))
    assert out.shape == (2, 128, 4, 4)
    # identity + resize is just a bilinear resize
    assert torch.allclose(out, F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False))
    # same size and channels: returned unchanged
    y = torch.randn(2, 128, 4, 4)
    assert torch.equal(ad("bottleneck", 0, y, torch.randn(2, 128, 4, 4)), y)


def test_adapters_errors() -> None:
    with pytest.raises(ValueError, match="decoder"):
        FeatureAdapters({"encoder": [(4, 2, 2)]}, {"encoder": [(4, 2, 2)]}, sites=["decoder"])
    ad = FeatureAdapters({"decoder": [(4, 2, 2)]}, {"decoder": [(8, 2, 2)]})
    with pytest.raises(ValueError, match="channels"):
        ad("decoder", 0, torch.randn(1, 5, 2, 2), torch.randn(1, 8, 2, 2))


# --------------------------------------------------------------------------------------- entropy


def test_entropy_uniform_and_peaked() -> None:
    c = 7
    assert softmax_entropy(torch.zeros(2, c, 3, 3), 1.0).item() == pytest.approx(math.log(c), rel=1e-6)
    assert softmax_entropy(torch.full((2, c, 3, 3), 5.0), 4.0).item() == pytest.approx(math.log(c), rel=1e-6)
    peaked = torch.zeros(2, c, 3, 3)
    peaked[:, 2] = 50.0
    assert softmax_entropy(peaked, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    # a higher temperature flattens the distribution
    x = torch.randn(2, c, 3, 3)
    assert softmax_entropy(x, 4.0) > softmax_entropy(x, 1.0)


# -------------------------------------------------------------------------------------- schedule

FULL = Phase(True, True, True, True)
HARD = Phase(True, True, True, False)
DIST = Phase(True, True, False, True)
TEACHER_ONLY = Phase(True, False, False, False)
STUDENT_ONLY = Phase(False, True, True, True)
NO_TEACHER_FULL = Phase(False, True, True, True)
NO_TEACHER_HARD = Phase(False, True, True, False)
NO_TEACHER_DIST = Phase(False, True, False, True)

# (alternation, epoch, step, teacher_trains) -> Phase
SCHEDULE_TABLE = [
    ("none", 0, 0, True, FULL),
    ("none", 3, 7, True, FULL),
    ("none", 0, 0, False, NO_TEACHER_FULL),
    ("step", 0, 0, True, HARD),
    ("step", 0, 1, True, DIST),
    ("step", 1, 2, True, HARD),  # the global step decides, not the epoch
    ("step", 1, 5, True, DIST),
    ("step", 0, 0, False, NO_TEACHER_HARD),
    ("step", 0, 1, False, NO_TEACHER_DIST),
    ("epoch", 0, 0, True, HARD),
    ("epoch", 0, 1, True, HARD),  # the epoch decides, not the step
    ("epoch", 1, 0, True, DIST),
    ("epoch", 1, 9, True, DIST),
    ("epoch", 2, 9, True, HARD),
    ("epoch", 1, 4, False, NO_TEACHER_DIST),
    ("teacher_student", 0, 0, True, TEACHER_ONLY),
    ("teacher_student", 0, 1, True, STUDENT_ONLY),
    ("teacher_student", 1, 2, True, TEACHER_ONLY),
    ("teacher_student", 1, 3, True, STUDENT_ONLY),
    ("teacher_student", 0, 0, False, NO_TEACHER_FULL),
    ("teacher_student", 1, 1, False, NO_TEACHER_FULL),
]


@pytest.mark.parametrize(("alternation", "epoch", "step", "teacher_trains", "want"), SCHEDULE_TABLE)
def test_phase_for(alternation: str, epoch: int, step: int, teacher_trains: bool, want: Phase) -> None:
    assert phase_for(alternation, epoch, step, teacher_trains) == want


@pytest.mark.parametrize("alternation", ["none", "epoch", "step", "teacher_student"])
def test_phase_for_mode_none_is_always_hard(alternation: str) -> None:
    for epoch, step in itertools.product(range(3), range(4)):
        assert phase_for(alternation, epoch, step, False, mode="none") == NO_TEACHER_HARD


def test_phase_is_frozen_and_rejects_unknown() -> None:
    with pytest.raises(AttributeError):
        FULL.update_teacher = False  # type: ignore[misc]
    with pytest.raises(ValueError, match="alternation"):
        phase_for("bogus", 0, 0, True)


# ------------------------------------------------------------------------------------- objective

NUM_CLASSES = 4


class Toy(nn.Module):
    """Tiny UNet-ish net returning logits and {encoder, bottleneck, decoder} features."""

    def __init__(self, enc_channels: list[int], dec: int) -> None:
        super().__init__()
        chans = [3, *enc_channels]
        self.enc = nn.ModuleList(
            nn.Conv2d(a, b, 3, stride=2 if i else 1, padding=1)
            for i, (a, b) in enumerate(itertools.pairwise(chans))
        )
        self.dec = nn.Conv2d(enc_channels[-1], dec, 1)
        self.head = nn.Conv2d(dec, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        feats, h = [], x
        for conv in self.enc:
            h = torch.relu(conv(h))
            feats.append(h)
        d = F.interpolate(torch.relu(self.dec(h)), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(d), {"encoder": feats, "bottleneck": [feats[-1]], "decoder": [d]}

    def shapes(self, size: int = 16) -> dict[str, list[tuple[int, int, int]]]:
        _, f = self(torch.zeros(1, 3, size, size))
        return {k: [tuple(t.shape[1:]) for t in v] for k, v in f.items()}


def make_pair() -> tuple[Toy, Toy]:
    torch.manual_seed(0)
    return Toy([6, 12], dec=8), Toy([8, 12, 24], dec=16)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 16, 16, generator=g)
    y = torch.randint(0, NUM_CLASSES, (2, 16, 16), generator=g)
    y[0, 0] = 255
    return x, y


SITE_SUBSETS = [
    list(c)
    for r in range(0, 5)
    for c in itertools.combinations(["encoder", "bottleneck", "decoder", "logits"], r)
]


def _grads(module: nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("feature_loss", ["mse", "cosine", "cwd", "affinity"])
@pytest.mark.parametrize("mode", ["online", "offline", "mutual", "none"])
def test_objective_every_combination_backprops_to_the_right_params(mode: str, feature_loss: str) -> None:
    student, teacher = make_pair()
    x, y = batch()
    for sites in SITE_SUBSETS:
        cfg = DistillConfig(mode=mode, sites=sites, feature_loss=feature_loss, teacher_entropy=0.1)
        obj = KDObjective(cfg, NUM_CLASSES, 255, None, student.shapes(), teacher.shapes())
        student.zero_grad(set_to_none=True)
        teacher.zero_grad(set_to_none=True)
        s_logits, s_feats = student(x)
        t_logits, t_feats = teacher(x)  # with grad, as in online training
        loss, parts = obj.student_loss(s_logits, s_feats, t_logits, t_feats, y, FULL)
        assert loss.dim() == 0 and torch.isfinite(loss), (mode, sites)
        assert set(parts) == {"hard", "soft", "feature", "total"}
        assert all(isinstance(v, float) for v in parts.values())
        assert parts["total"] == pytest.approx(loss.item(), rel=1e-6)
        loss.backward()
        assert all(g is not None for g in _grads(student)), (mode, sites)
        assert all(g is None for g in _grads(teacher)), (mode, sites)
        n_features = len([s for s in sites if s != "logits"]) if mode != "none" else 0
        if n_features:
            assert any(isinstance(m, nn.Conv2d) for m in obj.adapters.modules())
            assert all(p.grad is not None for p in obj.parameters()), (mode, sites)
            assert parts["feature"] > 0
        else:
            assert parts["feature"] == 0.0
            assert len(list(obj.parameters())) == 0
        if "logits" not in sites or mode == "none":
            assert parts["soft"] == 0.0

        t_loss, t_parts = obj.teacher_loss(t_logits, y, s_logits)
        assert torch.isfinite(t_loss) and set(t_parts) == {"hard", "soft", "entropy", "total"}
        student.zero_grad(set_to_none=True)
        t_loss.backward()
        assert all(g is not None for g in _grads(teacher)), (mode, sites)
        assert all(g is None for g in _grads(student)), (mode, sites)


def test_objective_mode_none_needs_no_teacher() -> None:
    student, _ = make_pair()
    x, y = batch()
    obj = KDObjective(DistillConfig(mode="none", sites=["logits", "encoder"]), NUM_CLASSES, 255)
    s_logits, s_feats = student(x)
    loss, parts = obj.student_loss(s_logits, s_feats, None, None, y, DIST)  # phase ignored: CE only
    assert loss.item() == pytest.approx(hard_loss(s_logits, y, 255).item(), rel=1e-6)
    assert parts["soft"] == parts["feature"] == 0.0


def _setup(sites: list[str], alpha: float = 0.3, fw: float = 2.0, **kw: object):
    student, teacher = make_pair()
    x, y = batch()
    cfg = DistillConfig(mode="online", sites=sites, alpha=alpha, feature_weight=fw, temperature=3.0, **kw)
    obj = KDObjective(cfg, NUM_CLASSES, 255, None, student.shapes(), teacher.shapes())
    s_logits, s_feats = student(x)
    with torch.no_grad():
        t_logits, t_feats = teacher(x)
    return obj, s_logits, s_feats, t_logits, t_feats, y


def test_objective_phase_weights() -> None:
    alpha, fw = 0.3, 2.0
    obj, s, sf, t, tf, y = _setup(["bottleneck", "logits"], alpha, fw)
    ce = hard_loss(s, y, 255).item()
    kl = soft_kl(s, t, 3.0).item()
    feat = mse_loss(
        obj.adapters("bottleneck", 0, sf["bottleneck"][0], tf["bottleneck"][0]), tf["bottleneck"][0]
    )
    feat = feat.item()

    def total(phase: Phase) -> float:
        return obj.student_loss(s, sf, t, tf, y, phase)[0].item()

    assert total(FULL) == pytest.approx((1 - alpha) * ce + alpha * kl + fw * feat, rel=1e-5)
    assert total(HARD) == pytest.approx(ce, rel=1e-5)  # no (1 - alpha) when alternating
    assert total(DIST) == pytest.approx(alpha * kl + fw * feat, rel=1e-5)
    loss, parts = obj.student_loss(s, sf, t, tf, y, TEACHER_ONLY)
    assert loss.item() == 0.0 and loss.requires_grad
    assert parts == {"hard": 0.0, "soft": 0.0, "feature": 0.0, "total": 0.0}
    # phase=None means the combined loss
    assert obj.student_loss(s, sf, t, tf, y)[0].item() == pytest.approx(total(FULL), rel=1e-6)
    _, parts = obj.student_loss(s, sf, t, tf, y, FULL)
    assert parts["hard"] == pytest.approx(ce, rel=1e-5)
    assert parts["soft"] == pytest.approx(kl, rel=1e-5)
    assert parts["feature"] == pytest.approx(feat, rel=1e-5)


def test_objective_without_logits_site_keeps_full_ce() -> None:
    obj, s, sf, t, tf, y = _setup(["decoder"], alpha=0.3, fw=0.5)
    ce = hard_loss(s, y, 255).item()
    _, parts = obj.student_loss(s, sf, t, tf, y, FULL)
    assert parts["soft"] == 0.0
    assert parts["total"] == pytest.approx(ce + 0.5 * parts["feature"], rel=1e-5)


def test_objective_feature_term_is_mean_over_sites_of_mean_over_pairs() -> None:
    obj, s, sf, t, tf, y = _setup(["encoder", "decoder"], feature_loss="cosine")
    enc_pairs = obj.adapters.pairs("encoder")
    assert enc_pairs == [(0, 1), (1, 2)]  # student 2 stages vs teacher 3: deepest aligned
    enc = np.mean(
        [
            cosine_loss(
                obj.adapters("encoder", k, sf["encoder"][i], tf["encoder"][j]), tf["encoder"][j]
            ).item()
            for k, (i, j) in enumerate(enc_pairs)
        ]
    )
    dec = cosine_loss(obj.adapters("decoder", 0, sf["decoder"][0], tf["decoder"][0]), tf["decoder"][0]).item()
    _, parts = obj.student_loss(s, sf, t, tf, y, DIST)
    assert parts["feature"] == pytest.approx((enc + dec) / 2, rel=1e-5)


def test_objective_class_weights() -> None:
    w = torch.tensor([1.0, 3.0, 0.5, 2.0])
    student, _ = make_pair()
    x, y = batch()
    obj = KDObjective(DistillConfig(mode="none"), NUM_CLASSES, 255, class_weights=w)
    s, _ = student(x)
    assert obj.student_loss(s, None, None, None, y)[0].item() == pytest.approx(
        hard_loss(s, y, 255, w).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="class_weights"):
        KDObjective(DistillConfig(mode="none"), NUM_CLASSES, 255, class_weights=torch.ones(3))


def test_objective_feature_sites_need_shapes() -> None:
    with pytest.raises(ValueError, match="student_shapes"):
        KDObjective(DistillConfig(mode="online", sites=["encoder"]), NUM_CLASSES, 255)
    KDObjective(DistillConfig(mode="none", sites=["encoder"]), NUM_CLASSES, 255)  # no teacher: fine


def test_mutual_teacher_loss_includes_kl_to_student() -> None:
    torch.manual_seed(0)
    s = torch.randn(2, NUM_CLASSES, 8, 8, requires_grad=True)
    t = torch.randn(2, NUM_CLASSES, 8, 8, requires_grad=True)
    y = torch.randint(0, NUM_CLASSES, (2, 8, 8))
    online = KDObjective(DistillConfig(mode="online", alpha=0.4, temperature=2.0), NUM_CLASSES, 255)
    mutual = KDObjective(DistillConfig(mode="mutual", alpha=0.4, temperature=2.0), NUM_CLASSES, 255)
    l_on, p_on = online.teacher_loss(t, y, s)
    l_mu, p_mu = mutual.teacher_loss(t, y, s)
    assert p_on["soft"] == 0.0
    kl = soft_kl(t, s, 2.0).item()
    assert p_mu["soft"] == pytest.approx(kl, rel=1e-6)
    assert l_mu.item() - l_on.item() == pytest.approx(0.4 * kl, rel=1e-5)
    l_mu.backward()
    assert t.grad is not None and s.grad is None
    with pytest.raises(ValueError, match="s_logits"):
        mutual.teacher_loss(t, y)


def test_teacher_entropy_lowers_loss_for_high_entropy_outputs() -> None:
    t = torch.randn(2, NUM_CLASSES, 8, 8) * 0.01  # nearly uniform: entropy ~ log(C)
    y = torch.randint(0, NUM_CLASSES, (2, 8, 8))
    plain = KDObjective(DistillConfig(mode="online", temperature=1.0), NUM_CLASSES, 255)
    beta = KDObjective(DistillConfig(mode="online", temperature=1.0, teacher_entropy=0.5), NUM_CLASSES, 255)
    l0, _ = plain.teacher_loss(t, y)
    l1, parts = beta.teacher_loss(t, y)
    assert parts["entropy"] == pytest.approx(math.log(NUM_CLASSES), rel=1e-3)
    assert l1.item() == pytest.approx(l0.item() - 0.5 * parts["entropy"], rel=1e-5)
    assert l1.item() < l0.item()


@pytest.mark.parametrize("mode, beta", [("online", 0.0), ("online", 0.3), ("mutual", 0.0), ("mutual", 0.3)])
def test_step_loss_equals_student_plus_teacher_loss(mode, beta) -> None:
    """step_loss shares each log_softmax(logits / T) between terms: same losses, same gradients."""
    torch.manual_seed(0)
    s0 = torch.randn(2, NUM_CLASSES, 8, 8)
    t0 = torch.randn(2, NUM_CLASSES, 8, 8)
    y = torch.randint(0, NUM_CLASSES, (2, 8, 8))
    obj = KDObjective(
        DistillConfig(mode=mode, alpha=0.4, temperature=3.0, teacher_entropy=beta), NUM_CLASSES, 255
    )

    s, t = s0.clone().requires_grad_(), t0.clone().requires_grad_()
    l_s, p_s = obj.student_loss(s, None, t, None, y)
    l_t, p_t = obj.teacher_loss(t, y, s)
    (l_s + l_t).backward()

    s2, t2 = s0.clone().requires_grad_(), t0.clone().requires_grad_()
    loss, parts = obj.step_loss(s2, None, t2, None, y, student_learns=True, teacher_learns=True)
    loss.backward()
    assert torch.equal(loss.detach(), (l_s + l_t).detach())
    assert parts == {**p_s, **{f"teacher_{k}": v for k, v in p_t.items()}}
    # the same gradients; where two terms share one log_softmax (mutual KL + entropy) their
    # gradients meet before its backward instead of after, so only the last bits may differ
    torch.testing.assert_close(s2.grad, s.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(t2.grad, t.grad, rtol=1e-6, atol=1e-9)
