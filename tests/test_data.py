"""kdseg.data: formats, validation, transforms and loaders."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdseg.config import DataConfig
from kdseg.data import (
    CAMVID_CLASSES,
    CARLA_CLASSES,
    SegData,
    Split,
    build_transforms,
    load_data,
    make_loaders,
)
from kdseg.errors import DatasetError


def _shared(shared_data: Path, name: str) -> Path:
    path = shared_data / name
    if not path.is_dir():
        pytest.skip(f"real sample data not available: {path} is absent")
    return path


@pytest.fixture
def lyft(shared_data: Path) -> Path:
    """../shared/data/lyft_udacity_samples (skips when absent; see conftest.shared_data)."""
    return _shared(shared_data, "lyft_udacity_samples")


@pytest.fixture
def camvid(shared_data: Path) -> Path:
    return _shared(shared_data, "camvid")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDSEG_CACHE", str(tmp_path_factory.mktemp("kdseg_cache")))


# ---------------------------------------------------------------------------------- helpers


def write_carla(root: Path, n: int = 6, size=(40, 56), seed: int = 0, ids=range(13)) -> Path:
    """A tiny carla-layout dataset with random pixels and labels."""
    rng = np.random.default_rng(seed)
    (root / "CameraRGB").mkdir(parents=True, exist_ok=True)
    (root / "CameraSeg").mkdir(parents=True, exist_ok=True)
    ids = np.asarray(list(ids), np.uint8)
    for i in range(n):
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        seg = np.zeros((*size, 3), np.uint8)
        seg[..., 0] = rng.choice(ids, size)
        Image.fromarray(img).save(root / "CameraRGB" / f"{i}.png")
        Image.fromarray(seg).save(root / "CameraSeg" / f"{i}.png")
    return root


def carla_cfg(root: Path, **kw) -> DataConfig:
    kw.setdefault("image_size", (32, 32))
    return DataConfig(format="carla", root=root, **kw)


def blocky(rng: np.random.Generator, size=(64, 64), block: int = 8, n: int = 13) -> np.ndarray:
    h, w = size
    small = rng.integers(0, n, (h // block, w // block), dtype=np.uint8)
    return np.kron(small, np.ones((block, block), np.uint8))


# ---------------------------------------------------------------------------------- carla


def test_carla_samples_native_resolution(lyft: Path):
    # crop mode with a large image_size keeps training images at their native 800x600.
    cfg = carla_cfg(lyft, image_size=(320, 416), augment={"mode": "crop"})
    data = load_data(cfg)
    assert isinstance(data, SegData)
    assert data.source == f"carla:{lyft.resolve()}"
    assert data.train.names == ["0", "1", "2"] and data.val.names == ["1"]  # split folders used
    assert data.train.images.shape == (3, 600, 800, 3) and data.train.masks.shape == (3, 600, 800)
    assert data.val.images.shape == (1, 320, 416, 3)
    assert data.num_classes == 13 and data.class_names == list(CARLA_CLASSES)
    assert data.palette.shape == (13, 3) and data.palette.dtype == np.uint8
    for i, name in enumerate(data.train.names):
        rgb = np.asarray(Image.open(lyft / "train" / "CameraRGB" / f"{name}.png").convert("RGB"))
        seg = np.asarray(Image.open(lyft / "train" / "CameraSeg" / f"{name}.png").convert("RGB"))
        np.testing.assert_array_equal(data.train.images[i], rgb)  # RGB order, not BGR
        np.testing.assert_array_equal(data.train.masks[i], seg[..., 0])  # id = red channel
    assert set(np.unique(data.train.masks)) <= set(range(13))


def test_carla_samples_resized(lyft: Path):
    data = load_data(carla_cfg(lyft, image_size=(96, 128)))
    assert data.train.images.shape == (3, 96, 128, 3) and data.train.images.dtype == np.uint8
    assert data.train.masks.shape == (3, 96, 128) and data.train.masks.dtype == np.uint8
    seg = np.asarray(Image.open(lyft / "train" / "CameraSeg" / "0.png"))[..., 0]
    assert set(np.unique(data.train.masks[0])) <= set(np.unique(seg))  # nearest: no new ids
    rgb = np.asarray(Image.open(lyft / "train" / "CameraRGB" / "0.png").convert("RGB"), np.float32)
    small = data.train.images[0].astype(np.float32)
    means = rgb.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(small.reshape(-1, 3).mean(0), means, atol=2.0)
    # a round trip through pickle (Ray's object store) keeps everything
    again = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(again.train.masks, data.train.masks)
    assert again.class_names == data.class_names


def test_carla_random_split(tmp_path: Path):
    root = write_carla(tmp_path / "d", n=10)
    a = load_data(carla_cfg(root, val_fraction=0.3, seed=1))
    b = load_data(carla_cfg(root, val_fraction=0.3, seed=1))
    c = load_data(carla_cfg(root, val_fraction=0.3, seed=2))
    assert len(a.val) == 3 and len(a.train) == 7
    assert a.val.names == b.val.names and a.val.names != c.val.names
    assert sorted(a.train.names + a.val.names, key=int) == [str(i) for i in range(10)]
    assert a.train.names == sorted(a.train.names, key=int)  # file order kept within a split
    # tiny sets still get one of each; max_samples caps each split
    two = write_carla(tmp_path / "two", n=2)
    d = load_data(carla_cfg(two, val_fraction=0.01))
    assert len(d.train) == 1 and len(d.val) == 1
    e = load_data(carla_cfg(root, val_fraction=0.3, seed=1, max_samples=2))
    assert e.train.names == a.train.names[:2] and e.val.names == a.val.names[:2]


def test_carla_natural_sort(tmp_path: Path):
    root = write_carla(tmp_path / "d", n=12)
    d = load_data(carla_cfg(root, val_fraction=0.1, seed=0))
    assert d.train.names == sorted(d.train.names, key=int)


# ---------------------------------------------------------------------------------- camvid


def test_camvid(camvid: Path):
    cfg = DataConfig(
        format="camvid",
        root=camvid,
        num_classes=11,
        image_size=(192, 256),
        max_samples=4,
        augment={"mode": "crop"},
    )
    data = load_data(cfg)
    assert len(data.train) == 4 and len(data.val) == 4
    assert data.class_names == list(CAMVID_CLASSES) and data.palette.shape == (11, 3)
    assert data.train.images.shape == (4, 360, 480, 3)  # native size (crop mode, never upscaled)
    ids = set(np.unique(np.concatenate([data.train.masks.ravel(), data.val.masks.ravel()])).tolist())
    assert ids <= set(range(11)) | {255}
    saw_unlabelled = False
    for i, name in enumerate(data.train.names):
        raw = np.asarray(Image.open(camvid / "trainannot" / f"{name}.png"))
        expect = np.where(raw == 11, 255, raw)
        np.testing.assert_array_equal(data.train.masks[i], expect)
        saw_unlabelled |= bool((raw == 11).any())
    assert saw_unlabelled
    assert data.train.names == sorted(p.stem for p in (camvid / "train").glob("*.png"))[:4]


def test_camvid_resized_val(camvid: Path):
    cfg = DataConfig(format="camvid", root=camvid, num_classes=11, image_size=(96, 128), max_samples=3)
    data = load_data(cfg)
    assert data.train.images.shape == (3, 96, 128, 3) and data.val.masks.shape == (3, 96, 128)


# ---------------------------------------------------------------------------------- errors


def test_missing_root(tmp_path: Path):
    with pytest.raises(DatasetError, match="not found"):
        load_data(carla_cfg(tmp_path / "nope"))


def test_not_a_carla_folder(tmp_path: Path):
    with pytest.raises(DatasetError, match="CameraRGB"):
        load_data(carla_cfg(tmp_path))


def test_empty_folder(tmp_path: Path):
    (tmp_path / "CameraRGB").mkdir()
    (tmp_path / "CameraSeg").mkdir()
    with pytest.raises(DatasetError, match=r"CameraRGB: no PNG images"):
        load_data(carla_cfg(tmp_path))


def test_empty_val_split(tmp_path: Path):
    write_carla(tmp_path / "train", n=2)
    (tmp_path / "val" / "CameraRGB").mkdir(parents=True)
    (tmp_path / "val" / "CameraSeg").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"val/CameraRGB: no PNG images"):
        load_data(carla_cfg(tmp_path))


def test_missing_label_folder(tmp_path: Path):
    write_carla(tmp_path, n=2)
    for p in (tmp_path / "CameraSeg").iterdir():
        p.unlink()
    (tmp_path / "CameraSeg").rmdir()
    with pytest.raises(DatasetError, match="CameraSeg: dataset folder not found"):
        load_data(carla_cfg(tmp_path))


def test_unpaired(tmp_path: Path):
    root = write_carla(tmp_path, n=4)
    (root / "CameraSeg" / "2.png").unlink()
    (root / "CameraRGB" / "3.png").rename(root / "CameraRGB" / "x3.png")
    with pytest.raises(DatasetError, match="unpaired") as e:
        load_data(carla_cfg(root))
    msg = str(e.value)
    assert "2" in msg and "x3" in msg and "labels without an image" in msg


def test_size_mismatch(tmp_path: Path):
    root = write_carla(tmp_path, n=3)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "CameraSeg" / "1.png")
    with pytest.raises(DatasetError, match=r"1\.png is 56x40 \(WxH\) but its label .*1\.png is 20x20"):
        load_data(carla_cfg(root))


@pytest.mark.parametrize("where", ["CameraRGB", "CameraSeg"])
def test_corrupt_png(tmp_path: Path, where: str):
    root = write_carla(tmp_path, n=3)
    path = root / where / "2.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated: the header is fine, the pixels are not
    with pytest.raises(DatasetError, match=rf"{where}/2\.png: corrupt or truncated PNG"):
        load_data(carla_cfg(root, val_fraction=0.4))
    path.write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=rf"{where}/2\.png: not a readable PNG"):
        load_data(carla_cfg(root, val_fraction=0.4))


def test_label_id_too_large(tmp_path: Path):
    root = write_carla(tmp_path, n=3)
    seg = np.zeros((40, 56, 3), np.uint8)
    seg[:5, :5, 0] = 20
    seg[5:9, :5, 0] = 13
    seg[9:, :, 0] = 255  # the ignore index is allowed
    Image.fromarray(seg).save(root / "CameraSeg" / "0.png")
    with pytest.raises(DatasetError, match=r"CameraSeg/0\.png: label ids \[13, 20\]"):
        load_data(carla_cfg(root))
    # a config with fewer classes than the labels use is caught the same way
    ok = write_carla(tmp_path / "ok", n=3, ids=range(12, 13))
    with pytest.raises(DatasetError, match=r"label ids \[12\].*num_classes=12"):
        load_data(carla_cfg(ok, num_classes=12))
    # more classes than the format defines is fine: names and colours are padded
    d = load_data(carla_cfg(ok, num_classes=15))
    assert len(d.class_names) == 15 and d.palette.shape == (15, 3) and d.class_names[-1] == "class_14"


def test_split_validates_shapes():
    with pytest.raises(ValueError):
        Split(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 9), np.uint8), ["a", "b"])


# ---------------------------------------------------------------------------------- transforms

PALETTE = np.random.default_rng(0).permutation(np.linspace(0, 255, 13 * 3)).reshape(13, 3).round()


def _consistent(image: torch.Tensor, mask: torch.Tensor, interior: np.ndarray | None = None) -> float:
    """Fraction of (interior) pixels whose colour is their class's palette colour."""
    img = image.permute(1, 2, 0).numpy() * 255.0
    expect = PALETTE[mask.numpy()]
    ok = np.abs(img - expect).max(-1) < 1.0
    return float(ok[interior].mean() if interior is not None else ok.mean())


def _interior(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(int)
    same = np.ones_like(m, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            same &= np.roll(np.roll(m, dy, 0), dx, 1) == m
    same[[0, -1], :] = False
    same[:, [0, -1]] = False
    return same


@pytest.mark.parametrize("normalize", ["imagenet", "none"])
# stored 48x40: resized to 32x64 (down and up); 32x64: already that size
@pytest.mark.parametrize("stored", [(48, 40), (32, 64)])
def test_a_pipeline_with_nothing_random_equals_albumentations_without_importing_it(normalize, stored):
    """Validation, and training without augmentation, skip albumentations: same tensors as its pipeline."""
    import subprocess
    import sys

    import albumentations as A
    import cv2
    from albumentations.pytorch import ToTensorV2

    from kdseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*stored, 3), dtype=np.uint8)
    mask = rng.integers(0, 13, stored, dtype=np.uint8)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize == "imagenet" else ((0.0,) * 3, (1.0,) * 3)
    reference = A.Compose(
        [
            A.Resize(32, 64, interpolation=cv2.INTER_AREA, mask_interpolation=cv2.INTER_NEAREST),
            A.Normalize(mean=mean, std=std, max_pixel_value=255.0),
            ToTensorV2(),
        ]
    )(image=image, mask=mask)
    cfg = DataConfig(image_size=(32, 64), augment={"enabled": False, "normalize": normalize})
    for train in (True, False):
        out = build_transforms(cfg, train=train, seed=0)(image=image, mask=mask)
        assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 32, 64)
        torch.testing.assert_close(out["image"], reference["image"], rtol=0, atol=1e-6)
        assert torch.equal(out["mask"], reference["mask"])
    code = (
        "import sys; from kdseg.config import DataConfig; from kdseg.data import make_loaders, build_transforms; "
        "build_transforms(DataConfig(augment={'enabled': False}), train=True); "
        "print('albumentations' in sys.modules)"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"


def test_hflip_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    mask = blocky(rng)
    image = PALETTE[mask].astype(np.uint8)
    cfg = DataConfig(image_size=(64, 64), augment={"hflip": 1.0, "color_jitter": 0.0, "normalize": "none"})
    out = build_transforms(cfg, train=True, seed=0)(image=image, mask=mask)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 64, 64)
    np.testing.assert_array_equal(out["mask"].numpy(), mask[:, ::-1])
    assert _consistent(out["image"], out["mask"]) == 1.0


def test_random_resized_crop_keeps_alignment():
    rng = np.random.default_rng(1)
    mask = blocky(rng, size=(128, 128), block=16)
    image = PALETTE[mask].astype(np.uint8)
    cfg = DataConfig(
        image_size=(64, 64),
        augment={
            "mode": "crop",
            "crop_scale": (0.3, 0.6),
            "hflip": 0.5,
            "color_jitter": 0.0,
            "normalize": "none",
        },
    )
    t = build_transforms(cfg, train=True, seed=3)
    seen = set()
    for _ in range(6):
        out = t(image=image, mask=mask)
        m = out["mask"].numpy()
        assert m.shape == (64, 64) and set(np.unique(m)) <= set(np.unique(mask))
        assert _consistent(out["image"], out["mask"], _interior(m)) > 0.99
        seen.add(out["mask"].numpy().tobytes())
    assert len(seen) > 1  # actually random


def test_val_transform_is_deterministic_and_normalises():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    mask = rng.integers(0, 13, (64, 96), dtype=np.uint8)
    cfg = DataConfig(image_size=(64, 96))
    t = build_transforms(cfg, train=False)
    a, b = t(image=image, mask=mask), t(image=image, mask=mask)
    torch.testing.assert_close(a["image"], b["image"])
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expect = (image / 255.0 - mean) / std
    np.testing.assert_allclose(a["image"].permute(1, 2, 0).numpy(), expect, atol=1e-4)
    np.testing.assert_array_equal(a["mask"].numpy(), mask)
    # a disabled train pipeline is the validation pipeline
    off = DataConfig(image_size=(64, 96), augment={"enabled": False, "mode": "crop"})
    c = build_transforms(off, train=True, seed=5)(image=image, mask=mask)
    torch.testing.assert_close(c["image"], a["image"])


def test_transform_resizes_other_sizes():
    # data decoded for crop mode but loaded by a resize-mode trial still comes out at image_size
    rng = np.random.default_rng(3)
    mask = blocky(rng, size=(128, 192), block=32)
    image = PALETTE[mask].astype(np.uint8)
    out = build_transforms(DataConfig(image_size=(64, 96), augment={"normalize": "none"}), train=False)(
        image=image, mask=mask
    )
    assert out["image"].shape == (3, 64, 96) and out["mask"].shape == (64, 96)
    assert _consistent(out["image"], out["mask"], _interior(out["mask"].numpy())) > 0.99


# ---------------------------------------------------------------------------------- loaders


def _toy_data(n_train: int = 10, n_val: int = 3, size=(32, 32)) -> SegData:
    rng = np.random.default_rng(0)

    def split(n: int, prefix: str) -> Split:
        masks = np.stack([blocky(rng, size, 8) for _ in range(n)])
        images = PALETTE[masks].astype(np.uint8)
        return Split(images, masks, [f"{prefix}{i}" for i in range(n)])

    return SegData(
        split(n_train, "t"),
        split(n_val, "v"),
        13,
        255,
        list(CARLA_CLASSES),
        np.zeros((13, 3), np.uint8),
        "toy",
    )


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loaders_shapes_and_dtypes():
    data = _toy_data()
    cfg = DataConfig(image_size=(32, 32))
    train, val = make_loaders(data, cfg, batch_size=4, num_workers=0, seed=0)
    tb = _batches(train)
    assert len(tb) == 2  # 10 // 4, last incomplete batch dropped
    x, y = tb[0]
    assert x.dtype == torch.float32 and x.shape == (4, 3, 32, 32)
    assert y.dtype == torch.int64 and y.shape == (4, 32, 32)
    vb = _batches(val)
    assert [len(b[0]) for b in vb] == [3]
    # a train split no larger than a batch keeps its only batch
    small, _ = make_loaders(_toy_data(n_train=3), cfg, batch_size=4, num_workers=0, seed=0)
    assert [len(b[0]) for b in small] == [3]


def test_loaders_read_only_arrays():
    data = _toy_data()
    for s in (data.train, data.val):
        s.images.flags.writeable = False
        s.masks.flags.writeable = False
    train, _ = make_loaders(data, DataConfig(image_size=(32, 32)), batch_size=4, num_workers=0, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _batches(train)


@pytest.mark.parametrize("workers", [0, 2])
def test_loaders_are_seed_deterministic(workers: int):
    data = _toy_data(n_train=12)
    cfg = DataConfig(image_size=(32, 32), augment={"mode": "crop", "color_jitter": 1.0})
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train, val = make_loaders(data, cfg, batch_size=4, num_workers=workers, seed=seed)
        runs[name] = (_batches(train) + _batches(train), _batches(val))
    for (xa, ya), (xb, yb) in zip(runs["a"][0], runs["b"][0], strict=True):
        torch.testing.assert_close(xa, xb)
        torch.testing.assert_close(ya, yb)
    assert any(not torch.equal(xa, xc) for (xa, _), (xc, _) in zip(runs["a"][0], runs["c"][0], strict=True))
    # epochs differ from each other, validation never changes
    assert not torch.equal(runs["a"][0][0][0], runs["a"][0][3][0])
    for (xa, _), (xc, _) in zip(runs["a"][1], runs["c"][1], strict=True):
        torch.testing.assert_close(xa, xc)


@pytest.mark.timeout(120)
def test_workers_start_after_threaded_decoding(tmp_path: Path):
    # Decoding resizes large images with OpenCV on several threads; loader workers forked
    # afterwards must not inherit a broken OpenCV thread pool (they used to hang).
    root = write_carla(tmp_path / "d", n=4, size=(480, 640))
    cfg = carla_cfg(root, image_size=(224, 320), val_fraction=0.5, augment={"mode": "crop"})
    data = load_data(cfg)
    train, val = make_loaders(data, cfg, batch_size=1, num_workers=2, seed=0)
    assert len(_batches(train)) == 2 and len(_batches(val)) == 2


@pytest.mark.timeout(120)
def test_batches_independent_of_workers_and_resumable():
    data = _toy_data(n_train=12)
    cfg = DataConfig(image_size=(32, 32), augment={"mode": "crop", "color_jitter": 1.0})
    train0, _ = make_loaders(data, cfg, batch_size=4, num_workers=0, seed=3)
    epochs0 = [_batches(train0) for _ in range(3)]
    train2, _ = make_loaders(data, cfg, batch_size=4, num_workers=2, seed=3)
    epochs2 = [_batches(train2) for _ in range(3)]
    resumed, _ = make_loaders(data, cfg, batch_size=4, num_workers=0, seed=3)
    resumed.set_epoch(2)
    epoch_r = _batches(resumed)
    for got in (epochs2[0], epochs2[1], epochs2[2], epoch_r):
        assert len(got) == 3
    for a, b in [*zip(epochs0, epochs2, strict=True), (epochs0[2], epoch_r)]:
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            torch.testing.assert_close(xa, xb)
            torch.testing.assert_close(ya, yb)
    assert not torch.equal(epochs0[1][0][0], epochs0[2][0][0])
