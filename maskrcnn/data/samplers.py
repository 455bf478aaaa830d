"""Samplers: an infinite, seeded, resumable, rank-sharded training batch sampler with aspect
ratio grouping, and an inference sampler that gives each image to exactly one rank."""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def aspect_ratio_group_ids(aspect_ratios: Sequence[float]) -> np.ndarray:
    """Group 0: landscape or square (w / h >= 1), group 1: portrait (detectron2's two groups)."""
    return (np.asarray(aspect_ratios) < 1.0).astype(np.int64)


class TrainingBatchSampler(Sampler):
    """Infinite stream of batches ``[(dataset_index, sample_seed), ...]``.

    Epoch ``e`` is a permutation drawn from ``(seed, e)``; rank ``r`` of ``world_size`` takes
    every ``world_size``-th index of it, so the ranks see disjoint shares of each epoch. With
    ``group_ids`` a batch only holds indices of one group (images of similar aspect ratio, so
    padding wastes little). Each sample also gets its own seed for its random transforms,
    derived from (seed, rank, batch number, position), so a batch is the same whichever worker
    loads it and whether or not training was interrupted.

    The stream is a pure function of (size, batch_size, seed, group_ids, rank, world_size):
    starting at ``start_iter`` skips that many batches, which is how training resumes.
    """

    def __init__(
        self,
        *,
        size: int,
        batch_size: int,
        seed: int,
        group_ids: Sequence[int] | None = None,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
    ):
        if size <= 0:
            raise ValueError("TrainingBatchSampler: the dataset is empty")
        if batch_size <= 0:
            raise ValueError(f"TrainingBatchSampler: batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"TrainingBatchSampler: rank {rank} not in [0, {world_size})")
        if group_ids is not None and len(group_ids) != size:
            raise ValueError(f"TrainingBatchSampler: {len(group_ids)} group ids for {size} samples")
        self.size, self.batch_size, self.seed = size, batch_size, int(seed)
        self.group_ids = None if group_ids is None else np.asarray(group_ids)
        self.rank, self.world_size, self.start_iter = rank, world_size, int(start_iter)

    def _indices(self) -> Iterator[int]:
        epoch = 0
        while True:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            yield from perm[self.rank :: self.world_size].tolist()
            epoch += 1

    def _sample_seed(self, iteration: int, position: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.rank, iteration, position]).generate_state(1)[0])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        buckets = collections.defaultdict(list)
        iteration = 0
        for idx in self._indices():
            bucket = buckets[0 if self.group_ids is None else int(self.group_ids[idx])]
            bucket.append(idx)
            if len(bucket) < self.batch_size:
                continue
            batch = bucket[:]
            bucket.clear()
            if iteration >= self.start_iter:
                yield [(i, self._sample_seed(iteration, j)) for j, i in enumerate(batch)]
            iteration += 1


class InferenceSampler(Sampler):
    """Indices ``0..size-1`` split into ``world_size`` contiguous shards (sizes differ by at most
    one), so every image is evaluated exactly once across ranks."""

    def __init__(self, *, size: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"InferenceSampler: rank {rank} not in [0, {world_size})")
        base, extra = divmod(size, world_size)
        begin = rank * base + min(rank, extra)
        self.indices = range(begin, begin + base + (1 if rank < extra else 0))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
