"""Registries that plug in (dataset formats, architectures, losses) and refusals that import nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from kdseg.config import DataConfig, ModelConfig
from kdseg.data.classes import classes_for
from kdseg.data.registry import available_formats, format_info, register
from kdseg.models.registry import ARCHS, own_archs
from kdseg.registry import LazyRegistry
from tests.conftest import REPO

HEAVY = (
    "torch",
    "segmentation_models_pytorch",
    "timm",
    "ray",
    "optuna",
    "wandb",
    "matplotlib",
    "albumentations",
)


def test_bad_input_is_refused_without_heavy_imports(tmp_path: Path) -> None:
    """`kdseg train BAD.yaml`, `kdseg-sweep BAD_SPACE.yaml` and a bad --set: exit 2, one message, no torch."""
    base = (REPO / "experiments" / "quickstart_synth.yaml").read_text()
    space = (REPO / "search_spaces" / "quickstart_cpu.yaml").read_text()
    base_path = tmp_path / "base.yaml"
    base_path.write_text(base)
    (tmp_path / "bad_train.yaml").write_text(base.replace("epochs: 3", "epochs: -1"))
    good_space = space.replace("base: ../experiments/quickstart_synth.yaml", f"base: {base_path}")
    assert good_space != space and "num_samples: 10" in good_space
    (tmp_path / "space.yaml").write_text(good_space)
    (tmp_path / "bad_space.yaml").write_text(good_space.replace("num_samples: 10", "num_samples: -3"))
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from kdseg.cli import main, sweep_main
        out = []
        for fn, argv in [
            (main, ["train", "bad_train.yaml"]),
            (sweep_main, ["bad_space.yaml"]),
            (sweep_main, ["space.yaml", "--set", "train.epochs=-2"]),
            (sweep_main, ["space.yaml", "--set", "distill.feature_loss=l1"]),
        ]:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = fn(argv)
            out.append([rc, err.getvalue()])
        heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
        print(json.dumps({{"runs": out, "heavy": heavy}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], result  # refused before any of them was imported
    (train, space_run, set_run, loss_run) = result["runs"]
    assert train == [
        2,
        "kdseg: error: bad_train.yaml: train.epochs: Input should be greater than or equal to 1, got -1\n",
    ]
    assert space_run[0] == 2 and "bad_space.yaml: sweep.num_samples: Input should be greater" in space_run[1]
    assert set_run[0] == 2 and "space.yaml: --set train.epochs: Input should be greater" in set_run[1]
    assert loss_run[0] == 2 and "--set distill.feature_loss: unknown feature loss 'l1'" in loss_run[1]
    for _rc, err in result["runs"]:
        assert err.count("kdseg: error:") == 1 and err.endswith("\n"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad_space.yaml",
        "bad_train.yaml",
        "base.yaml",
        "space.yaml",
    ]


def test_an_unknown_smp_encoder_is_still_refused_with_its_key(tmp_path: Path) -> None:
    from kdseg.config import load_config
    from kdseg.errors import ConfigError

    cfg = tmp_path / "c.yaml"
    text = (REPO / "experiments" / "quickstart_synth.yaml").read_text()
    cfg.write_text(text.replace("encoder: resnet18", "encoder: resnet1"))
    with pytest.raises(
        ConfigError, match=r"c\.yaml: student\.encoder: unknown encoder 'resnet1'; similar: resnet18"
    ):
        load_config(cfg)
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=r"--set teacher\.arch: unknown architecture 'Unett'"):
        load_config(cfg, ["train.epochs=2", "teacher.arch=Unett"])


# ------------------------------------------------------------------------------------ data formats


def test_every_registered_format_is_a_config_format_with_its_classes() -> None:
    formats = available_formats()
    assert formats == ["bdd100k", "camvid", "carla", "cityscapes", "synthetic"]
    for name in formats:
        info = format_info(name)
        assert len(info.classes) == len(info.palette) >= 2 and info.reader is not None
        assert DataConfig(format=name, root="/data").format == name
    with pytest.raises(
        ValidationError, match="unknown dataset format 'kitti'; known: bdd100k, camvid, carla"
    ):
        DataConfig(format="kitti", root="/data")
    names, palette = classes_for("cityscapes", 20)  # the report's table when a sweep recorded none
    assert names[:2] == ["road", "sidewalk"] and names[-1] == "class_19" and palette.shape == (20, 3)
    assert classes_for("bdd100k", 19)[0] == classes_for("cityscapes", 19)[0]


def test_a_format_registered_elsewhere_is_selectable() -> None:
    from kdseg.data import registry

    @register("toy_format", classes=("a", "b"), palette=np.array([(0, 0, 0), (255, 255, 255)]))
    def toy(cfg):
        raise NotImplementedError

    try:
        assert DataConfig(format="toy_format", root="/data").format == "toy_format"
        assert classes_for("toy_format", 3)[0] == ["a", "b", "class_2"]
    finally:
        registry._FORMATS.pop("toy_format")
    with pytest.raises(ValueError, match="2 classes but 1 colours"):
        register("bad", classes=("a", "b"), palette=np.zeros((1, 3)))(toy)


# ----------------------------------------------------------------------------------- architectures


def test_own_archs_are_read_without_torch_and_match_the_builders() -> None:
    code = (
        "import sys; from kdseg.models.registry import own_archs; "
        "print(','.join(own_archs()), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["lightweight_unet,fcn_resnet50", "False"]
    # importing the builders registers exactly those names (in whatever order the process imported them)
    assert sorted(ARCHS) == sorted(own_archs())
    for name in own_archs():
        assert callable(ARCHS.options[name]["taps"]) and isinstance(ARCHS.options[name]["model_type"], type)
    assert ModelConfig(arch="lightweight_unet", encoder="anything").arch == "lightweight_unet"


def test_taps_come_from_the_registered_arch() -> None:
    from kdseg.models import build_model, tap_modules

    model = build_model(ModelConfig(arch="lightweight_unet", width=0.25), 3)
    points = tap_modules(model)
    assert list(points) == ["encoder", "bottleneck", "decoder", "logits"]
    assert [p.path for p in points["encoder"]] == ["encoder.0", "encoder.1", "encoder.2"]


def test_lazy_registry_reads_literal_names_only(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "toy_home.py").write_text(
        "from kdseg.registry import LazyRegistry\nREG = LazyRegistry('toy', ('toy_home',), 'reg')\n"
        "reg = REG.register\n\n@reg('b')\ndef b(): pass\n\n@reg('a', x=1)\ndef a(): pass\n"
    )
    (tmp_path / "toy_bad.py").write_text("NAME = 'n'\n\n@reg(NAME)\ndef f(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = LazyRegistry("toy", ("toy_home",), "reg")
    assert reg.names() == ("b", "a") and "toy_home" not in sys.modules  # read, not imported
    with pytest.raises(ValueError, match=r"toy_bad\.py:3: @reg needs the name as a string literal"):
        LazyRegistry("toy", ("toy_bad",), "reg").names()
