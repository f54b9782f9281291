"""Deterministic, shardable batch order: batch k of a run is a pure function of (seed, k).

Each epoch is a permutation seeded by (seed, epoch). Global micro-batch k takes the
next ``batch_size × num_processes`` indices of it, and process r keeps its slice, so
a resumed run continues exactly where it stopped, and n processes with batch b see
the same data as one process with batch n·b.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Yields this process's index batches from global micro-batch ``start`` on, forever."""

    def __init__(self, dataset_size: int, batch_size: int, *, seed: int, start: int = 0, num_processes: int = 1,
                 process_index: int = 0) -> None:
        self.global_batch = batch_size * num_processes
        if dataset_size < self.global_batch:
            raise ValueError(
                f"the dataset has {dataset_size} items, fewer than one global batch of {self.global_batch} "
                f"({batch_size} per process × {num_processes} processes)"
            )
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.process_index = process_index
        self.batches_per_epoch = dataset_size // self.global_batch
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def batch(self, step: int) -> list[int]:
        """Indices of this process's part of global micro-batch ``step``."""
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)[0])
            self._epoch = epoch
            self._order = torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(seed))
        first = position * self.global_batch + self.process_index * self.batch_size
        return self._order[first:first + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs this for progress bars we do not use
        raise TypeError("StepBatchSampler is infinite")
