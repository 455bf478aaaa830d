"""Batching and the loader builders of the training and evaluation loops."""

from __future__ import annotations

import random
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..distributed import get_rank, get_world_size
from .batch_transport import SlotReceiver, collate_packed
from .samplers import InferenceSampler, TrainingBatchSampler, aspect_ratio_group_ids


def collate(batch):
    """[(image, target), ...] -> (tuple of images, tuple of targets). Images keep their own sizes
    and their dtype ((3, H, W) uint8 from our datasets: they cross worker processes and pinned
    memory at a quarter of float32's bytes); the model converts, normalises and pads them."""
    return tuple(zip(*batch))


class _SeededSamples(Dataset):
    """Reads ``(index, sample_seed)`` keys: the dataset's random transforms draw from that seed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        idx, seed = key
        if hasattr(self.dataset, "get"):
            return self.dataset.get(idx, rng=np.random.default_rng(seed))
        return self.dataset[idx]  # a dataset without seeded transforms


def _ignore_stop_signals(worker_id: int = 0) -> None:
    """A worker outlives SIGTERM / SIGUSR1 / SIGUSR2: SLURM signals every process of a job step,
    and a worker killed by one would fail the batch that the main process still needs to finish
    its iteration and checkpoint (maskrcnn/engine/stop_signals.py); the main process decides and
    shuts the workers down."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's base seed; make numpy/random follow it too.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    _ignore_stop_signals()


class TrainLoader:
    """Infinite iterator of training batches ``(images, targets)`` whose position can be saved.

    ``state_dict()`` holds the number of batches handed out so far; after ``load_state_dict``
    (or with ``start_iter``) the next iteration continues with exactly the batches, and the same
    random transforms, that an uninterrupted run would have produced.
    """

    def __init__(
        self,
        dataset,
        *,
        batch_size: int,
        num_workers: int,
        seed: int,
        aspect_ratio_grouping: bool = True,
        start_iter: int = 0,
    ):
        self.dataset = dataset
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.rank, self.world_size = get_rank(), get_world_size()
        self.iteration = int(start_iter)
        self.group_ids = None
        if aspect_ratio_grouping:
            if not hasattr(dataset, "aspect_ratios"):
                raise ValueError(
                    f"aspect_ratio_grouping needs dataset.aspect_ratios(); {type(dataset).__name__} has none"
                )
            self.group_ids = aspect_ratio_group_ids(dataset.aspect_ratios())

    def batch_sampler(self) -> TrainingBatchSampler:
        return TrainingBatchSampler(
            size=len(self.dataset),
            batch_size=self.batch_size,
            seed=self.seed,
            group_ids=self.group_ids,
            rank=self.rank,
            world_size=self.world_size,
            start_iter=self.iteration,
        )

    def __iter__(self):
        # With workers, a batch crosses to this process in one of the worker's reusable shared
        # buffers and arrives as views of it (with CUDA, as a pinned copy: batch_transport.py).
        packed = self.num_workers > 0
        pin = torch.cuda.is_available()
        receiver = SlotReceiver(pin_memory=pin) if packed else None
        loader = DataLoader(
            _SeededSamples(self.dataset),
            batch_sampler=self.batch_sampler(),
            num_workers=self.num_workers,
            collate_fn=collate_packed if packed else collate,
            worker_init_fn=_worker_init,
            pin_memory=pin and not packed,
            generator=torch.Generator().manual_seed(self.seed + self.rank),
        )
        for batch in loader:
            self.iteration += 1
            yield receiver.receive(batch) if packed else batch

    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "aspect_ratio_grouping": self.aspect_ratio_grouping,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "batch_size", "world_size", "aspect_ratio_grouping"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"TrainLoader.load_state_dict: saved {key}={state[key]!r} but this loader has "
                    f"{getattr(self, key)!r}; the batches would not continue the saved run"
                )
        self.iteration = int(state["iteration"])


def build_train_loader(
    dataset, *, batch_size: int, num_workers: int, seed: int, aspect_ratio_grouping: bool = True, start_iter: int = 0
) -> TrainLoader:
    """Infinite, iteration-based, rank-sharded training loader (see :class:`TrainLoader`).
    ``batch_size`` is per process."""
    return TrainLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
        aspect_ratio_grouping=aspect_ratio_grouping,
        start_iter=start_iter,
    )


def build_test_loader(dataset, *, batch_size: int = 1, num_workers: int = 0) -> DataLoader:
    """Each image once, in order, sharded across ranks when torch.distributed is initialised."""
    rank, world_size = get_rank(), get_world_size()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=InferenceSampler(size=len(dataset), rank=rank, world_size=world_size),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_ignore_stop_signals,
    )
