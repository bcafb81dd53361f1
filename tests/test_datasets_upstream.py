"""Cityscapes and BDD100K readers on fixtures in the exact upstream layouts (tests/fixtures_layouts.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdseg.config import DataConfig
from kdseg.data import BDD100K_CLASSES, CITYSCAPES_CLASSES, available_formats, load_data
from kdseg.data.formats.cityscapes import CITYSCAPES_LABELID_TO_TRAINID
from kdseg.errors import DatasetError
from tests.fixtures_layouts import write_bdd100k, write_cityscapes

# cityscapesScripts helpers/labels.py, (name, labelId, trainId) for the 19 evaluated classes.
UPSTREAM_TABLE = [
    ("road", 7, 0),
    ("sidewalk", 8, 1),
    ("building", 11, 2),
    ("wall", 12, 3),
    ("fence", 13, 4),
    ("pole", 17, 5),
    ("traffic light", 19, 6),
    ("traffic sign", 20, 7),
    ("vegetation", 21, 8),
    ("terrain", 22, 9),
    ("sky", 23, 10),
    ("person", 24, 11),
    ("rider", 25, 12),
    ("car", 26, 13),
    ("truck", 27, 14),
    ("bus", 28, 15),
    ("train", 31, 16),
    ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
]


def cs_cfg(root: Path, **kw) -> DataConfig:
    kw.setdefault("image_size", (32, 64))
    return DataConfig(format="cityscapes", root=root, num_classes=19, **kw)


def bdd_cfg(root: Path, **kw) -> DataConfig:
    kw.setdefault("image_size", (32, 64))
    return DataConfig(format="bdd100k", root=root, num_classes=19, **kw)


def test_formats_registered():
    assert {"cityscapes", "bdd100k"} <= set(available_formats())


def test_cityscapes_table_and_classes():
    assert [(n, lid, tid) for n, lid, tid in UPSTREAM_TABLE] == [
        (CITYSCAPES_CLASSES[t], lid, t) for lid, t in CITYSCAPES_LABELID_TO_TRAINID.items()
    ]
    assert BDD100K_CLASSES == CITYSCAPES_CLASSES and len(CITYSCAPES_CLASSES) == 19


# ------------------------------------------------------------------------------------ cityscapes


def test_cityscapes_loads_and_maps_label_ids(tmp_path: Path):
    root = write_cityscapes(tmp_path / "cs")
    # one label with every labelId 0..33 and 255 in known places, at the native size
    label = np.zeros((64, 128), np.uint8)
    ids = np.array([*range(34), 255], np.uint8)
    label[:, : len(ids)] = ids
    Image.fromarray(label).save(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png")
    data = load_data(cs_cfg(root, image_size=(64, 128)))

    assert data.train.names == ["aachen_000000_000019", "aachen_000002_000021", "bochum_000001_000020"]
    assert data.val.names == ["frankfurt_000000_000019", "lindau_000001_000020"]
    assert data.class_names == list(CITYSCAPES_CLASSES) and data.palette.shape == (19, 3)
    assert data.source.startswith("cityscapes:")
    got = data.train.masks[0, 0, : len(ids)]
    expected = [dict((lid, t) for _, lid, t in UPSTREAM_TABLE).get(int(i), 255) for i in ids]
    assert got.tolist() == expected
    assert data.val.masks.max() <= 255 and set(np.unique(data.val.masks)) <= {*range(19), 255}


def test_cityscapes_other_ignore_index(tmp_path: Path):
    root = write_cityscapes(tmp_path / "cs", splits={"train": 2, "val": 1})
    data = load_data(cs_cfg(root, ignore_index=250))
    assert 255 not in np.unique(data.train.masks) and 250 in np.unique(data.train.masks)


def test_cityscapes_without_val_splits_train(tmp_path: Path):
    root = write_cityscapes(tmp_path / "cs", splits={"train": 5})
    data = load_data(cs_cfg(root, val_fraction=0.4))
    assert len(data.train) == 3 and len(data.val) == 2
    assert not set(data.train.names) & set(data.val.names)


def test_cityscapes_unpaired_names_the_file(tmp_path: Path):
    root = write_cityscapes(tmp_path / "cs")
    (root / "gtFine/train/bochum/bochum_000001_000020_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError, match=r"unpaired files: images without a label in .*gtFine/train") as e:
        load_data(cs_cfg(root))
    assert "bochum/bochum_000001_000020_leftImg8bit.png" in str(e.value)
    assert "_gtFine_labelIds.png" in str(e.value)


def test_cityscapes_label_without_image(tmp_path: Path):
    root = write_cityscapes(tmp_path / "cs")
    (root / "leftImg8bit/val/lindau/lindau_000001_000020_leftImg8bit.png").unlink()
    with pytest.raises(
        DatasetError, match=r"labels without an image in .*leftImg8bit/val: lindau/lindau_000001"
    ):
        load_data(cs_cfg(root))


def test_cityscapes_bad_file_name(tmp_path: Path):
    root = write_cityscapes(tmp_path / "cs")
    src = root / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    src.rename(src.with_name("aachen_000000_000019.png"))
    with pytest.raises(DatasetError, match=r"aachen_000000_000019\.png: does not follow the Cityscapes"):
        load_data(cs_cfg(root))


@pytest.mark.parametrize("missing", ["gtFine", "leftImg8bit"])
def test_cityscapes_not_a_cityscapes_folder(tmp_path: Path, missing: str):
    root = write_cityscapes(tmp_path / "cs")
    (root / missing).rename(root / "elsewhere")
    with pytest.raises(
        DatasetError, match=r"cs: not a Cityscapes dataset: expected leftImg8bit/ and gtFine/"
    ):
        load_data(cs_cfg(root))


def test_cityscapes_empty_val_split(tmp_path: Path):
    root = write_cityscapes(tmp_path / "cs", splits={"train": 2})
    (root / "leftImg8bit/val/frankfurt").mkdir(parents=True)
    (root / "gtFine/val/frankfurt").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"leftImg8bit/val: no images found"):
        load_data(cs_cfg(root))


def test_cityscapes_size_mismatch_from_headers(tmp_path: Path):
    root = write_cityscapes(tmp_path / "cs")
    bad = root / "gtFine/val/lindau/lindau_000001_000020_gtFine_labelIds.png"
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(bad)
    with pytest.raises(DatasetError, match=r"is 128x64 \(WxH\) but its label .*lindau_000001_000020_gtFine"):
        load_data(cs_cfg(root))


def test_cityscapes_rgb_label_is_refused(tmp_path: Path):
    root = write_cityscapes(tmp_path / "cs")
    bad = root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(bad)
    with pytest.raises(
        DatasetError, match=r"aachen_000000_000019_gtFine_labelIds\.png: unsupported label PNG"
    ):
        load_data(cs_cfg(root))


# --------------------------------------------------------------------------------------- bdd100k


def test_bdd100k_loads_jpeg_and_train_ids(tmp_path: Path):
    root = write_bdd100k(tmp_path / "bdd", size=(64, 96))
    data = load_data(bdd_cfg(root, image_size=(64, 96)))
    assert len(data.train) == 3 and len(data.val) == 2  # images/10k/test is not read
    assert data.class_names == list(CITYSCAPES_CLASSES) and data.source.startswith("bdd100k:")
    name = data.train.names[0]
    on_disk = np.asarray(Image.open(root / "labels/sem_seg/masks/train" / f"{name}.png"))
    assert np.array_equal(data.train.masks[0], on_disk)  # train ids are used as they are
    jpeg = np.asarray(Image.open(root / "images/10k/train" / f"{name}.jpg").convert("RGB"))
    assert np.array_equal(data.train.images[0], jpeg)


def test_bdd100k_other_ignore_index(tmp_path: Path):
    root = write_bdd100k(tmp_path / "bdd")
    data = load_data(bdd_cfg(root, ignore_index=254))
    assert 255 not in np.unique(data.train.masks) and 254 in np.unique(data.train.masks)


def test_bdd100k_unpaired_mentions_upstream_issue(tmp_path: Path):
    root = write_bdd100k(tmp_path / "bdd")
    mask = sorted((root / "labels/sem_seg/masks/val").iterdir())[0]
    mask.unlink()
    with pytest.raises(
        DatasetError, match=r"images without a label in .*masks/val: " + mask.stem + r"\.jpg"
    ) as e:
        load_data(bdd_cfg(root))
    assert "bdd100k/bdd100k#103" in str(e.value)


def test_bdd100k_bad_label_id(tmp_path: Path):
    root = write_bdd100k(tmp_path / "bdd", label_ids=[0, 19, 255])
    with pytest.raises(DatasetError, match=r"masks/(train|val)/.*\.png: label ids \[19\] are not classes"):
        load_data(bdd_cfg(root))


def test_bdd100k_corrupt_jpeg_named(tmp_path: Path):
    root = write_bdd100k(tmp_path / "bdd")
    jpg = sorted((root / "images/10k/train").iterdir())[1]
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=rf"{jpg.name}: corrupt or truncated JPEG"):
        load_data(bdd_cfg(root))
    jpg.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=rf"{jpg.name}: not a readable JPEG"):
        load_data(bdd_cfg(root))


def test_bdd100k_empty_split_and_wrong_root(tmp_path: Path):
    root = write_bdd100k(tmp_path / "bdd100k", splits={"train": 2})  # as unzipped: a bdd100k/ folder
    (root / "images/10k/val").mkdir()
    (root / "labels/sem_seg/masks/val").mkdir()
    with pytest.raises(DatasetError, match=r"images/10k/val: no JPEG images found"):
        load_data(bdd_cfg(root))
    with pytest.raises(DatasetError, match=r"not a BDD100K dataset.*it holds a bdd100k/ folder"):
        load_data(bdd_cfg(tmp_path))


def test_bdd100k_rgb_colormap_is_refused(tmp_path: Path):
    root = write_bdd100k(tmp_path / "bdd")
    mask = sorted((root / "labels/sem_seg/masks/train").iterdir())[0]
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(mask)
    with pytest.raises(DatasetError, match=r"unsupported label PNG mode 'RGB'.*not the RGB colormaps"):
        load_data(bdd_cfg(root))
