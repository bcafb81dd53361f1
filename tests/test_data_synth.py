"""kdseg.data.synth: the procedural road-scene generator and ``format: synthetic``."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdseg.config import DataConfig
from kdseg.data import CARLA_CLASSES, load_data, synth_cache_dir, write_synth
from kdseg.errors import DatasetError


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDSEG_CACHE", str(tmp_path_factory.mktemp("kdseg_cache")))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_layout_and_manifest(tmp_path: Path):
    out = write_synth(tmp_path / "s", n=3, size=(48, 64), seed=0)
    assert out == (tmp_path / "s").resolve()
    assert sorted(p.name for p in (out / "CameraRGB").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert sorted(p.name for p in (out / "CameraSeg").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    meta = json.loads((out / "synth.json").read_text())
    assert meta["n"] == 3 and meta["size"] == [48, 64] and meta["seed"] == 0
    assert meta["classes"] == list(CARLA_CLASSES)
    rgb = Image.open(out / "CameraRGB" / "00000.png")
    seg = np.asarray(Image.open(out / "CameraSeg" / "00000.png"))
    assert rgb.mode == "RGB" and rgb.size == (64, 48)
    assert seg.shape == (48, 64, 3) and seg[..., 0].max() < 13
    assert not seg[..., 1:].any()  # class id in red, green = blue = 0
    assert not list(tmp_path.glob(".s.tmp-*"))  # no temporary folder left behind


def test_deterministic(tmp_path: Path):
    a = _files(write_synth(tmp_path / "a", n=4, size=(64, 64), seed=5))
    b = _files(write_synth(tmp_path / "b", n=4, size=(64, 64), seed=5))
    c = _files(write_synth(tmp_path / "c", n=4, size=(64, 64), seed=6))
    d = _files(write_synth(tmp_path / "d", n=2, size=(64, 64), seed=5))
    assert a == b
    assert all(a[k] != c[k] for k in a)
    assert all(d[k] == a[k] for k in d)  # image i depends on seed + i only, not on n


def test_all_classes_and_variety(tmp_path: Path):
    out = write_synth(tmp_path / "s", n=8, size=(96, 96), seed=0)
    masks = np.stack([np.asarray(Image.open(p))[..., 0] for p in sorted((out / "CameraSeg").iterdir())])
    images = np.stack([np.asarray(Image.open(p)) for p in sorted((out / "CameraRGB").iterdir())])
    assert set(np.unique(masks).tolist()) == set(range(13))
    counts = np.bincount(masks.ravel(), minlength=13) / masks.size
    assert counts.max() < 0.5  # no class dominates
    assert len({img.tobytes() for img in images}) == 8
    # colour alone does not give the class away: a nearest-class-mean colour classifier is poor
    means = np.stack([images[masks == c].mean(0) for c in range(13)])
    pix, lab = images.reshape(-1, 3).astype(np.float32), masks.ravel()
    pred = np.argmin(((pix[:, None, :] - means[None]) ** 2).sum(-1), 1)
    acc = (pred == lab).mean()
    assert acc < 0.6


def test_readable_by_carla_loader_and_cached(tmp_path: Path, monkeypatch):
    cfg = DataConfig(format="synthetic", image_size=(64, 64), synth={"n": 10, "size": (64, 64), "seed": 3})
    data = load_data(cfg)
    root = synth_cache_dir(10, (64, 64), 3)
    assert root.name == "n10_64x64_s3" and root.is_dir()
    assert str(root).startswith(str(Path(os.environ["KDSEG_CACHE"]).resolve()))
    assert data.source == f"synthetic:{root}"
    assert len(data.train) == 8 and len(data.val) == 2 and data.num_classes == 13
    first = (root / "synth.json").stat().st_mtime_ns
    again = load_data(cfg)  # reuses the cache
    assert (root / "synth.json").stat().st_mtime_ns == first
    np.testing.assert_array_equal(again.train.images, data.train.images)
    # an explicit root is generated on first use, then read as carla
    explicit = DataConfig(
        format="synthetic", root=tmp_path / "mine", image_size=(32, 32), synth={"n": 4, "size": (32, 32)}
    )
    d = load_data(explicit)
    assert (tmp_path / "mine" / "synth.json").is_file() and len(d.train) + len(d.val) == 4
    cfg_carla = DataConfig(format="carla", root=tmp_path / "mine", image_size=(32, 32))
    np.testing.assert_array_equal(load_data(cfg_carla).train.masks, d.train.masks)


def test_concurrent_generation(tmp_path: Path):
    out = tmp_path / "race"
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: write_synth(out, n=4, size=(32, 32), seed=1), range(3)))
    assert all(r == out.resolve() for r in results)
    assert len(list((out / "CameraRGB").iterdir())) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["race"]  # temporaries cleaned up


def test_refuses_to_overwrite(tmp_path: Path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        write_synth(out, n=2, size=(32, 32), seed=0)
    cfg = DataConfig(format="synthetic", root=out, image_size=(32, 32))
    with pytest.raises(DatasetError, match="no complete synthetic dataset"):
        load_data(cfg)
    # an empty folder is fine, and an existing identical dataset is returned as is
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_synth(empty, n=2, size=(32, 32), seed=0) == empty.resolve()
    assert write_synth(empty, n=2, size=(32, 32), seed=0) == empty.resolve()
    with pytest.raises(DatasetError, match="not empty"):
        write_synth(empty, n=3, size=(32, 32), seed=0)


def test_stale_cache_is_regenerated():
    cfg = DataConfig(format="synthetic", image_size=(32, 32), synth={"n": 3, "size": (32, 32), "seed": 0})
    load_data(cfg)
    manifest = synth_cache_dir(3, (32, 32), 0) / "synth.json"
    meta = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**meta, "version": -1}))
    load_data(cfg)
    assert json.loads(manifest.read_text())["version"] == meta["version"]
    assert [p.name for p in manifest.parent.parent.iterdir()] == ["n3_32x32_s0"]
