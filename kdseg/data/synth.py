"""Synthetic road scenes on disk, in the carla layout (``format: synthetic``, ``kdseg data synth``).

``write_synth`` renders ``n`` scenes (:mod:`kdseg.data.scene`) into ``out/CameraRGB/{i:05d}.png``
and ``out/CameraSeg/{i:05d}.png`` (class id in the red channel) plus ``out/synth.json``. Image
``i`` depends only on ``seed + i``, so a larger ``n`` extends a smaller one. The folder appears
atomically: it is written under a temporary name beside ``out`` and renamed when complete, so a
crash leaves nothing half-written and two processes racing to create it both end up reading one
complete copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from kdseg.data.decode import parallel_map
from kdseg.data.formats.carla import CARLA_CLASSES
from kdseg.data.scene import render_scene
from kdseg.errors import DatasetError

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MANIFEST = "synth.json"
RGB_DIR, SEG_DIR = "CameraRGB", "CameraSeg"


def cache_root() -> Path:
    """``$KDSEG_CACHE``, else ``$XDG_CACHE_HOME/kdseg``, else ``~/.cache/kdseg``."""
    if os.environ.get("KDSEG_CACHE"):
        return Path(os.environ["KDSEG_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "kdseg"


def synth_cache_dir(n: int, size: tuple[int, int], seed: int) -> Path:
    """Where ``format: synthetic`` without a root keeps its data."""
    h, w = size
    return (cache_root() / "synth" / f"n{n}_{h}x{w}_s{seed}").resolve()


def read_manifest(out: Path) -> dict | None:
    """The ``synth.json`` of a complete dataset in ``out``, or None."""
    try:
        meta = json.loads((Path(out) / MANIFEST).read_text())
        n = int(meta["n"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for sub in (RGB_DIR, SEG_DIR):
        try:
            count = sum(1 for p in (Path(out) / sub).iterdir() if p.suffix == ".png")
        except OSError:
            return None
        if count != n:
            return None
    return meta


def _params(n: int, size: tuple[int, int], seed: int) -> dict:
    return {"n": int(n), "size": [int(size[0]), int(size[1])], "seed": int(seed)}


def write_synth(out: Path, n: int, size: tuple[int, int], seed: int, progress: bool = False) -> Path:
    """Render ``n`` scenes of ``size`` ``(H, W)`` into ``out``; returns the absolute folder.

    An ``out`` that already holds exactly this dataset is returned as is; any other non-empty
    ``out`` is a DatasetError (nothing is overwritten).
    """
    out = Path(out).expanduser().resolve()
    if n < 1 or min(size) < 8:
        raise DatasetError(f"{out}: cannot generate {n} synthetic images of size {size[0]}x{size[1]}")
    want = _params(n, size, seed)
    meta = read_manifest(out)
    if meta is not None and {k: meta.get(k) for k in want} == want:
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: already exists and is not empty; not overwriting it")
    tmp = _render_to_temp(out, n, size, seed, progress)
    try:
        os.rename(tmp, out)  # atomic; also replaces an empty folder
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        meta = read_manifest(out)
        if meta is not None and {k: meta.get(k) for k in want} == want:
            return out  # another process finished first
        raise DatasetError(f"{out}: could not move the generated data into place") from None
    return out


def ensure_synth(root: Path, n: int, size: tuple[int, int], seed: int, progress: bool = False) -> Path:
    """Make sure ``root`` holds a complete synthetic dataset, generating it if missing.

    An existing complete dataset is used as it is, even with other parameters (it is the data
    the user pointed at), with a warning; a generator-version mismatch regenerates a dataset in
    the kdseg cache only.
    """
    root = Path(root)
    meta = read_manifest(root)
    if meta is None:
        if root.exists() and root.is_dir() and any(root.iterdir()):
            raise DatasetError(
                f"{root}: exists but holds no complete synthetic dataset (no valid {MANIFEST}); "
                "delete it or point data.root elsewhere"
            )
        return write_synth(root, n, size, seed, progress)
    want = _params(n, size, seed)
    in_cache = _is_relative_to(root.resolve(), cache_root().resolve())
    if in_cache and meta.get("version") != GENERATOR_VERSION:
        log.info("regenerating %s (generator version %s -> %s)", root, meta.get("version"), GENERATOR_VERSION)
        _replace(root, _render_to_temp(root, n, size, seed, progress))
    elif {k: meta.get(k) for k in want} != want:
        log.warning(
            "%s holds synthetic data generated with %s; data.synth asks for %s; using the data as it is",
            root,
            {k: meta.get(k) for k in want},
            want,
        )
    return root


def _render_to_temp(out: Path, n: int, size: tuple[int, int], seed: int, progress: bool) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / RGB_DIR).mkdir()
        (tmp / SEG_DIR).mkdir()

        def one(i: int) -> None:
            img, mask = render_scene(np.random.default_rng(seed + i), tuple(size))
            seg = np.zeros((*mask.shape, 3), np.uint8)
            seg[..., 2] = mask  # OpenCV writes BGR: index 2 is the PNG's red channel
            _imwrite(tmp / RGB_DIR / f"{i:05d}.png", img[..., ::-1])
            _imwrite(tmp / SEG_DIR / f"{i:05d}.png", seg)

        parallel_map(one, range(n), "generating synthetic scenes", progress)
        meta = {
            "generator": "kdseg.data.scene",
            "version": GENERATOR_VERSION,
            **_params(n, size, seed),
            "format": "carla",
            "classes": list(CARLA_CLASSES),
        }
        (tmp / MANIFEST).write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        return tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _imwrite(path: Path, bgr: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DatasetError(f"{path}: PNG encoding failed")
    path.write_bytes(buf.tobytes())


def _replace(out: Path, new: Path) -> None:
    """Swap ``new`` in for the folder ``out`` (two renames; readers never see a partial folder)."""
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        os.rename(out, trash / "old")
    except OSError:
        pass  # someone else moved it already
    try:
        os.rename(new, out)
    except OSError:
        shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(trash, ignore_errors=True)


def _is_relative_to(p: Path, base: Path) -> bool:
    try:
        p.relative_to(base)
    except ValueError:
        return False
    return True
