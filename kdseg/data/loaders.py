"""Torch datasets and loaders over the decoded arrays of a :class:`SegData`.

Training randomness is a function of ``(seed, epoch, index)`` only: the shuffle order of epoch
``e`` comes from a generator seeded by ``(seed, e)``, and the augmentation of item ``i`` in epoch
``e`` from a pipeline reseeded with ``(seed, e, i)``. So batches do not depend on the number of
loader workers or on what ran before, and a run resumed at epoch ``e`` (``loader.set_epoch(e)``)
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, get_worker_info

from kdseg.config import DataConfig
from kdseg.data.transforms import build_transforms
from kdseg.data.types import SegData, Split


def derive_seed(*keys: int) -> int:
    """A well-mixed 32-bit seed from integer keys (so seed 1/epoch 0 differs from seed 0/epoch 1)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(1)[0])


class SegDataset(Dataset):
    """Items ``(image float32 [3, H, W], mask int64 [H, W])`` of one :class:`Split`.

    With a ``seed``, item ``i`` is augmented with a pipeline reseeded from ``(seed, epoch, i)``;
    the epoch lives in shared memory so that :meth:`set_epoch` reaches persistent loader workers.
    The arrays are never written to (they may be read-only views into Ray's object store).
    """

    def __init__(self, split: Split, transform, seed: int | None = None) -> None:
        self.split = split
        self.transform = transform
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_() if seed is not None else None

    def __len__(self) -> int:
        return len(self.split)

    @property
    def epoch(self) -> int:
        return int(self._epoch) if self._epoch is not None else 0

    def set_epoch(self, epoch: int) -> None:
        if self._epoch is not None:
            self._epoch.fill_(int(epoch))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.split.images[i]
        mask = self.split.masks[i]
        if not img.flags.writeable:  # torch.from_numpy warns on read-only arrays
            img, mask = img.copy(), mask.copy()
        if self.seed is not None:
            self.transform.set_random_seed(derive_seed(self.seed, self.epoch, i))
        out = self.transform(image=img, mask=mask)
        m = out["mask"]
        m = m.long() if isinstance(m, torch.Tensor) else torch.from_numpy(np.asarray(m, dtype=np.int64))
        return out["image"].float(), m


class EpochRandomSampler(RandomSampler):
    """A random permutation per epoch, from a generator seeded by ``(seed, epoch)``.

    Being a ``RandomSampler``, it is replaced by accelerate's own seedable sampler when
    ``accelerator.prepare`` is asked for one; it then plays no part.
    """

    def __init__(self, data_source, seed: int) -> None:
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        self.generator.manual_seed(derive_seed(self.seed, self.epoch))
        yield from super().__iter__()


class EpochLoader(DataLoader):
    """A DataLoader whose epoch (shuffle order and augmentation) advances by one on each pass.

    ``set_epoch(e)`` before a pass makes that pass epoch ``e`` (resuming); passes without it
    continue from the previous one.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pending: int | None = None
        self._next = 0

    def set_epoch(self, epoch: int) -> None:
        self._pending = int(epoch)

    def __iter__(self):
        epoch = self._pending if self._pending is not None else self._next
        self._pending, self._next = None, epoch + 1
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return super().__iter__()


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a loader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def make_loaders(
    data: SegData, cfg: DataConfig, batch_size: int, num_workers: int, seed: int
) -> tuple[DataLoader, DataLoader]:
    """Train and validation loaders; the same ``seed`` gives the same batches and augmentations.

    Train shuffles (a new order each pass, see :class:`EpochLoader`) and drops the last
    incomplete batch when there is more than one batch. Validation keeps file order and applies
    no randomness.
    """
    train_ds = SegDataset(data.train, build_transforms(cfg, train=True, seed=seed), seed=seed)
    train = EpochLoader(
        train_ds,
        sampler=EpochRandomSampler(train_ds, seed),
        drop_last=len(train_ds) > batch_size,
        generator=torch.Generator().manual_seed(seed),  # worker seeds
        **_common(batch_size, num_workers),
    )
    return train, make_eval_loader(data.val, cfg, batch_size, num_workers, seed)


def make_eval_loader(
    split: Split, cfg: DataConfig, batch_size: int, num_workers: int, seed: int
) -> DataLoader:
    """The loader validation uses (file order, no randomness), for any split: ``kdseg eval`` too."""
    ds = SegDataset(split, build_transforms(cfg, train=False, seed=seed))
    return DataLoader(
        ds,
        shuffle=False,
        drop_last=False,
        generator=torch.Generator().manual_seed(seed),
        **_common(batch_size, num_workers),
    )


def _common(batch_size: int, num_workers: int) -> dict:
    return {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": num_workers > 0,
        "worker_init_fn": seed_worker if num_workers > 0 else None,
    }
