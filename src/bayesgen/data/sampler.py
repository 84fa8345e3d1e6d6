"""A shuffling sampler whose order is a function of (seed, epoch) and that can resume mid-epoch.

PyTorch's ``RandomSampler`` draws each epoch's permutation from the global RNG when its iterator
starts, so a resumed run cannot know which order the interrupted one was in, nor where. Here
epoch ``e`` is ``randperm(n)`` under a generator seeded from ``(seed, e)``, and
``resume(epoch, skip)`` makes the next iteration start ``skip`` indices into that epoch.
With several processes, rank ``r`` of ``w`` takes every ``w``-th index of that order from the
``r``-th (a distinct shard, as DistributedSampler), so a distributed run resumes mid-epoch too:
Lightning's DistributedSampler restarts an interrupted epoch from its beginning.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class ResumableRandomSampler(Sampler[int]):
    """Indices ``0..n-1`` in a fresh order every epoch. Lightning calls ``set_epoch`` before
    each epoch; an iteration started without one (plain PyTorch loops) takes the next epoch's
    order, as ``RandomSampler`` draws a new one. ``epoch_in_progress`` is the epoch of the
    iteration started last, which the training state records."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.seed = n, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        self.epoch_in_progress = 0
        self._skip = 0
        self._fresh = True  # the epoch was set and no iteration has used it yet

    def __len__(self) -> int:
        return self.n // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._fresh = int(epoch), True

    def resume(self, epoch: int, skip: int) -> None:
        """The next iteration is epoch ``epoch`` without its first ``skip`` indices."""
        self.epoch, self._skip, self._fresh = int(epoch), int(skip), True

    def permutation(self, epoch: int) -> torch.Tensor:
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))

    def __iter__(self) -> Iterator[int]:
        if not self._fresh:
            self.epoch += 1
        self._fresh = False
        skip, self._skip = self._skip, 0
        self.epoch_in_progress = self.epoch
        order = self.permutation(self.epoch)[: len(self) * self.world_size]
        return iter(order[self.rank::self.world_size][skip:].tolist())
