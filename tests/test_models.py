"""kdseg.models: building, feature taps, weights and checkpoints (small inputs, no network)."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

from kdseg.config import SITES, ModelConfig
from kdseg.errors import CheckpointError, WeightsError
from kdseg.models import (
    FCNResNet50,
    FeatureTaps,
    LightweightUNet,
    build_model,
    count_params,
    feature_shapes,
)
from kdseg.models.lightweight_unet import scaled_channels
from tests.conftest import REPO

NUM_CLASSES = 13
SIZE = 64

# (id, ModelConfig kwargs, expected encoder shapes [C, H, W] at 64x64, decoder shape)
R18 = [(64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
MODELS = {
    "unet_r34": (dict(arch="Unet", encoder="resnet34"), R18, (16, 64, 64)),
    "unet_r18": (dict(arch="Unet", encoder="resnet18"), R18, (16, 64, 64)),
    "unet_r50": (
        dict(arch="Unet", encoder="resnet50"),
        [(64, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)],
        (16, 64, 64),
    ),
    "unet_mobilenet_v2": (
        dict(arch="Unet", encoder="mobilenet_v2"),
        [(16, 32, 32), (24, 16, 16), (32, 8, 8), (96, 4, 4), (1280, 2, 2)],
        (16, 64, 64),
    ),
    "unet_effb0": (
        dict(arch="Unet", encoder="efficientnet-b0"),
        [(32, 32, 32), (24, 16, 16), (40, 8, 8), (112, 4, 4), (320, 2, 2)],
        (16, 64, 64),
    ),
    "unetpp_r18": (dict(arch="UnetPlusPlus", encoder="resnet18"), R18, (16, 64, 64)),
    "fpn_r18": (dict(arch="FPN", encoder="resnet18"), R18, (128, 16, 16)),
    "deeplabv3plus_r18": (
        dict(arch="DeepLabV3Plus", encoder="resnet18"),
        [(64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 4, 4)],  # output stride 16
        (256, 16, 16),
    ),
    "fcn_resnet50": (
        dict(arch="fcn_resnet50"),
        [(256, 16, 16), (512, 8, 8), (1024, 8, 8), (2048, 8, 8)],  # dilated, output stride 8
        (512, 8, 8),
    ),
    "lightweight_1.0": (
        dict(arch="lightweight_unet", width=1.0),
        [(64, 64, 64), (128, 32, 32), (256, 16, 16)],
        (64, 64, 64),
    ),
    "lightweight_0.5": (
        dict(arch="lightweight_unet", width=0.5),
        [(32, 64, 64), (64, 32, 32), (128, 16, 16)],
        (32, 64, 64),
    ),
}
_cache: dict[str, nn.Module] = {}


def model(name: str) -> nn.Module:
    """A model built once per session (seeded); tests must leave it without hooks."""
    if name not in _cache:
        torch.manual_seed(0)
        _cache[name] = build_model(ModelConfig(**MODELS[name][0]), NUM_CLASSES)
    return _cache[name]


def image(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def hook_count(m: nn.Module) -> int:
    return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())


def first_conv(m: nn.Module) -> nn.Conv2d:
    return next(x for x in m.modules() if isinstance(x, nn.Conv2d))


# ----------------------------------------------------------------------------------- building


@pytest.mark.parametrize("name", list(MODELS))
def test_output_shape(name):
    m = model(name).eval()
    with torch.no_grad():
        y = m(image())
    assert isinstance(y, torch.Tensor)
    assert y.shape == (2, NUM_CLASSES, SIZE, SIZE)


def test_families():
    assert isinstance(model("fcn_resnet50"), FCNResNet50)
    assert isinstance(model("lightweight_1.0"), LightweightUNet)


def test_count_params():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    assert count_params(m) == 3 * 8 * 9 + 8 + 16
    for p in m.parameters():
        p.requires_grad_(False)
    assert count_params(m) == 3 * 8 * 9 + 8 + 16  # frozen parameters still count
    # smp's resnet18 and resnet34 encoders differ only in depth
    assert count_params(model("unet_r34")) > count_params(model("unet_r18"))


def test_width_multiplier_changes_params_and_channels():
    counts = [count_params(LightweightUNet(NUM_CLASSES, width=w)) for w in (0.25, 0.5, 1.0, 2.0)]
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert count_params(model("lightweight_1.0")) < 2_000_000
    assert LightweightUNet(3, width=0.3).channels == (16, 40, 80)  # 19.2, 38.4, 76.8 rounded
    assert all(c % 8 == 0 for w in (0.1, 0.3, 0.7, 1.3) for c in LightweightUNet(3, width=w).channels)
    assert scaled_channels(64, 0.01) == 8


def test_lightweight_odd_input_size():
    m = LightweightUNet(NUM_CLASSES, width=0.25).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 50, 70)).shape == (1, NUM_CLASSES, 50, 70)


# ---------------------------------------------------------------------------------------- taps


@pytest.mark.parametrize("name", list(MODELS))
def test_taps_do_not_change_outputs(name):
    m = model(name).eval()
    x = image()
    before = hook_count(m)
    with torch.no_grad():
        plain = m(x)
        with FeatureTaps(m, SITES) as taps:
            tapped = m(x)
            assert hook_count(m) > before
        after = m(x)
    assert torch.equal(plain, tapped)
    assert torch.equal(plain, after)
    assert hook_count(m) == before
    assert torch.equal(taps.features["logits"][0], tapped)


@pytest.mark.parametrize("name", list(MODELS))
def test_sites_shapes(name):
    _, encoder_shapes, decoder_shape = MODELS[name]
    m = model(name).eval()
    with torch.no_grad(), FeatureTaps(m, SITES) as taps:
        y = m(image())
    f = taps.features
    assert set(f) == set(SITES)
    assert all(isinstance(v, list) for v in f.values())
    assert [tuple(t.shape[1:]) for t in f["encoder"]] == encoder_shapes
    assert all(t.shape[0] == 2 for v in f.values() for t in v)
    assert len(f["bottleneck"]) == 1 and len(f["decoder"]) == 1 and len(f["logits"]) == 1
    if name.startswith("lightweight"):  # the bottleneck block is after the last stage's pooling
        c, h, w = encoder_shapes[-1]
        assert tuple(f["bottleneck"][0].shape[1:]) == (c, h // 2, w // 2)
    else:  # the deepest encoder feature
        assert f["bottleneck"][0] is f["encoder"][-1]
    assert tuple(f["decoder"][0].shape[1:]) == decoder_shape
    assert f["logits"][0] is y

    shapes = feature_shapes(m, SITES, input_size=(SIZE, SIZE))
    assert shapes == {s: [tuple(t.shape[1:]) for t in v] for s, v in f.items()}


def test_only_requested_sites_are_hooked():
    m = model("unet_r18")
    before = hook_count(m)
    with FeatureTaps(m, []) as taps:
        assert hook_count(m) == before  # no overhead when nothing is tapped
        m.eval()(image(1))
        assert taps.features == {}
    with FeatureTaps(m, ["decoder"]) as taps:
        assert hook_count(m) == before + 2  # the reset pre-hook + the decoder hook
        with torch.no_grad():
            m(image(1))
        assert list(taps.features) == ["decoder"]
    with pytest.raises(ValueError, match="unknown feature site"):
        FeatureTaps(m, ["encoder", "neck"])
    assert hook_count(m) == before


def test_features_reset_each_forward_and_close():
    m = model("lightweight_0.5").eval()
    taps = FeatureTaps(m, ["encoder", "logits"])
    with torch.no_grad():
        m(image(1))
        first = taps.features
        m(image(2))
    assert len(taps.features["encoder"]) == 3  # not accumulated over forwards
    assert taps.features["logits"][0].shape[0] == 2
    assert first["logits"][0].shape[0] == 1  # an earlier dict keeps its tensors
    taps.close()
    taps.close()  # idempotent
    with torch.no_grad():
        m(image(1))
    assert taps.features["logits"][0].shape[0] == 2  # no longer updated
    assert hook_count(m) == 0 and not taps.active


@pytest.mark.parametrize(
    "name", ["unet_r18", "fpn_r18", "deeplabv3plus_r18", "fcn_resnet50", "lightweight_0.5"]
)
def test_gradients_flow_from_tapped_features(name):
    torch.manual_seed(0)
    m = build_model(ModelConfig(**MODELS[name][0]), NUM_CLASSES).train()
    with FeatureTaps(m, ["encoder", "bottleneck", "decoder"]) as taps:
        m(image())
        for site in ("encoder", "bottleneck", "decoder"):
            m.zero_grad(set_to_none=True)
            loss = sum(t.pow(2).mean() for t in taps.features[site])
            assert loss.requires_grad
            loss.backward(retain_graph=True)
            grad = first_conv(m).weight.grad
            assert grad is not None and grad.abs().sum() > 0, site


def test_feature_shapes_restores_modes():
    m = model("unet_r18").train()
    m.encoder.eval()  # e.g. a frozen encoder
    shapes = feature_shapes(m, ["bottleneck", "logits"], input_size=(96, 128))
    assert shapes == {"bottleneck": [(512, 3, 4)], "logits": [(NUM_CLASSES, 96, 128)]}
    assert m.training and m.decoder.training and not m.encoder.training
    assert hook_count(m) == 0
    m.eval()


def test_taps_through_a_wrapper():
    m = model("lightweight_0.5").eval()
    wrapped = nn.DataParallel(m)  # CPU: calls m directly
    with torch.no_grad(), FeatureTaps(wrapped, ["bottleneck"]) as taps:
        wrapped(image(1))
    assert len(taps.features["bottleneck"]) == 1


# ---------------------------------------------------------------------------------- checkpoints


def outputs(m: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return m.eval()(image(1))


@pytest.mark.parametrize("name", ["unet_r18", "lightweight_0.5"])
def test_checkpoint_round_trip(tmp_path, name):
    cfg = ModelConfig(**MODELS[name][0])
    torch.manual_seed(3)
    src = build_model(cfg, NUM_CLASSES)
    for mod in src.modules():  # non-trivial BatchNorm statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
    path = tmp_path / "model.pt"
    torch.save(src.state_dict(), path)
    torch.manual_seed(4)
    loaded = build_model(cfg.model_copy(update={"checkpoint": path}), NUM_CLASSES)
    assert torch.equal(outputs(src), outputs(loaded))
    assert not torch.equal(outputs(src), outputs(build_model(cfg, NUM_CLASSES)))


def test_checkpoint_dict_roles(tmp_path):
    cfg = ModelConfig(arch="lightweight_unet", width=0.25)
    torch.manual_seed(0)
    student, teacher = build_model(cfg, NUM_CLASSES), build_model(cfg, NUM_CLASSES)
    path = tmp_path / "last.pt"
    torch.save({"student": student.state_dict(), "teacher": teacher.state_dict(), "epoch": 3}, path)
    ck = cfg.model_copy(update={"checkpoint": path})
    assert torch.equal(outputs(build_model(ck, NUM_CLASSES, role="teacher")), outputs(teacher))
    assert torch.equal(outputs(build_model(ck, NUM_CLASSES, role="student")), outputs(student))
    with pytest.raises(CheckpointError, match="role"):
        build_model(ck, NUM_CLASSES)
    # {"model": ...} fits any role; DDP's "module." prefix is stripped
    wrapped = {"module." + k: v for k, v in student.state_dict().items()}
    torch.save({"model": wrapped, "epoch": 1}, path)
    assert torch.equal(outputs(build_model(ck, NUM_CLASSES, role="teacher")), outputs(student))
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError, match="no model state dict"):
        build_model(ck, NUM_CLASSES)


def test_bad_checkpoints(tmp_path):
    cfg = ModelConfig(arch="lightweight_unet", width=0.25)
    good = tmp_path / "good.pt"
    torch.save(build_model(cfg, NUM_CLASSES).state_dict(), good)

    def load(path: Path, **update) -> None:
        build_model(cfg.model_copy(update={"checkpoint": path, **update}), NUM_CLASSES)

    with pytest.raises(CheckpointError, match="not found") as e:
        load(tmp_path / "missing.pt")
    assert "missing.pt" in str(e.value)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        load(truncated)
    assert "truncated.pt" in str(e.value)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load(garbage)

    whole = tmp_path / "whole_model.pt"
    torch.save(nn.Linear(2, 2), whole)  # a pickled module, refused by weights_only
    with pytest.raises(CheckpointError, match="weights_only"):
        load(whole)

    with pytest.raises(CheckpointError, match="wrong shape") as e:
        load(good, width=0.5)
    assert "good.pt" in str(e.value)
    with pytest.raises(CheckpointError, match="missing"):
        build_model(ModelConfig(arch="Unet", encoder="resnet18", checkpoint=good), NUM_CLASSES)

    wrong_classes = tmp_path / "classes.pt"
    torch.save(build_model(cfg, 5).state_dict(), wrong_classes)
    with pytest.raises(CheckpointError, match=r"head\.weight"):
        load(wrong_classes)


# ------------------------------------------------------------------------------ encoder weights


def test_local_encoder_weights_round_trip(tmp_path):
    torch.manual_seed(5)
    src = build_model(ModelConfig(arch="Unet", encoder="resnet18"), NUM_CLASSES)
    path = tmp_path / "encoder.pth"
    torch.save(src.encoder.state_dict(), path)
    cfg = ModelConfig(arch="FPN", encoder="resnet18", weights=str(path))  # another decoder, same encoder
    dst = build_model(cfg, NUM_CLASSES)
    assert all(
        torch.equal(a, b)
        for a, b in zip(src.encoder.state_dict().values(), dst.encoder.state_dict().values(), strict=True)
    )
    # a full model state dict under "state_dict" (keys prefixed "encoder.") fits too
    torch.save({"state_dict": src.state_dict()}, path)
    dst = build_model(cfg, NUM_CLASSES)
    assert torch.equal(dst.encoder.conv1.weight, src.encoder.conv1.weight)


def test_local_weights_fcn_from_torchvision_resnet50(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(6)
    net = resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(net.state_dict(), path)  # includes fc.*, which the backbone lacks
    m = build_model(ModelConfig(arch="fcn_resnet50", weights=str(path)), NUM_CLASSES)
    assert torch.equal(m.backbone.layer4[2].conv3.weight, net.layer4[2].conv3.weight)


def test_local_weights_lightweight(tmp_path):
    cfg = ModelConfig(arch="lightweight_unet", width=0.5)
    torch.manual_seed(7)
    src = build_model(cfg, NUM_CLASSES)
    path = tmp_path / "lw.pth"
    torch.save(src.state_dict(), path)  # full model: the "encoder." keys are used
    dst = build_model(cfg.model_copy(update={"weights": str(path)}), NUM_CLASSES)
    assert torch.equal(dst.encoder[2][0].conv1[1].weight, src.encoder[2][0].conv1[1].weight)


def test_bad_local_weights(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(model("unet_r34").encoder.state_dict(), path)
    with pytest.raises(WeightsError) as e:
        build_model(ModelConfig(arch="Unet", encoder="resnet18", weights=str(path)), NUM_CLASSES)
    msg = str(e.value)
    assert "r34.pth" in msg and "unexpected" in msg and "layer1.2" in msg

    torch.save(model("unet_r50").encoder.state_dict(), path)
    with pytest.raises(WeightsError, match="wrong shape"):
        build_model(ModelConfig(arch="Unet", encoder="resnet18", weights=str(path)), NUM_CLASSES)

    with pytest.raises(WeightsError, match="file not found"):
        build_model(
            ModelConfig(arch="Unet", encoder="resnet18", weights=str(tmp_path / "nope.pth")), NUM_CLASSES
        )
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    with pytest.raises(WeightsError, match="bad.pth"):
        build_model(ModelConfig(arch="Unet", encoder="resnet18", weights=str(bad)), NUM_CLASSES)
    with pytest.raises(WeightsError, match="no pretrained"):
        build_model(ModelConfig(arch="lightweight_unet", weights="imagenet"), NUM_CLASSES)


def test_imagenet_offline_smp(tmp_path, monkeypatch):
    """smp's download fails offline: one WeightsError that says what to do. No network is used."""
    import huggingface_hub
    import segmentation_models_pytorch.encoders as smp_encoders

    real = huggingface_hub.hf_hub_download

    def offline_download(*args, **kwargs):
        # the real client, but restricted to an empty cache: exactly what an offline machine sees
        kwargs.update(local_files_only=True, cache_dir=str(tmp_path / "hf-cache"))
        return real(*args, **kwargs)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(smp_encoders, "hf_hub_download", offline_download)
    cfg = ModelConfig(arch="Unet", encoder="resnet18", weights="imagenet")
    with pytest.raises(WeightsError) as e:
        build_model(cfg, NUM_CLASSES, role="teacher")
    msg = str(e.value)
    assert msg.startswith("teacher.weights:")
    assert "'resnet18'" in msg and "could not download" in msg and "offline" in msg
    assert "teacher.weights: /path/to/encoder.pth" in msg and "teacher.weights: null" in msg
    assert "cache" in msg and "\n" not in msg


def test_imagenet_offline_fcn(tmp_path, monkeypatch):
    import torch.hub

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # empty cache
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsError) as e:
        build_model(ModelConfig(arch="fcn_resnet50", weights="imagenet"), NUM_CLASSES, role="student")
    msg = str(e.value)
    assert msg.startswith("student.weights:") and "resnet50" in msg and "offline" in msg
    assert "student.weights: null" in msg


def test_the_known_smp_names_are_the_installed_smps() -> None:
    """kdseg/models/smp_known.py (what lets a driver and a refused config skip importing smp) holds
    exactly the installed smp's architectures and encoders; another smp version: rewrite it."""
    from importlib.metadata import version

    from kdseg.models import smp_known
    from kdseg.models.smp_import import import_smp
    from kdseg.models.smp_names import known_names

    installed = version("segmentation_models_pytorch")
    assert smp_known.SMP_VERSION == installed, (
        f"smp_known.py is for smp {smp_known.SMP_VERSION}, {installed} is installed (names are then checked "
        "by importing smp): run python -m kdseg.models.smp_names"
    )
    smp = import_smp()
    assert known_names() is smp_known
    assert smp_known.ARCHITECTURES == {k: v.__name__ for k, v in smp.MODEL_ARCHITECTURES_MAPPING.items()}
    assert list(smp_known.ENCODERS) == list(smp.encoders.get_encoder_names())


def test_known_smp_names_are_checked_without_importing_smp_or_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from kdseg.config import load_config\n"
        f"cfg = load_config({str(REPO / 'experiments' / 'quickstart_synth.yaml')!r}, "
        "['teacher.arch=UnetPlusPlus', 'student.arch=FPN', 'student.encoder=mobilenet_v2'])\n"
        "assert cfg.student.encoder == 'mobilenet_v2'\n"
        "from kdseg.errors import ConfigError\n"
        "try:\n"
        f"    load_config({str(REPO / 'experiments' / 'quickstart_synth.yaml')!r}, ['student.encoder=resnet1'])\n"
        "except ConfigError as e:\n"
        "    assert \"unknown encoder 'resnet1'; similar: resnet18, resnet34\" in str(e), e\n"
        "print(sorted(m for m in ('torch', 'segmentation_models_pytorch', 'timm') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]
