"""Deterministic, resumable index orders for the labeled and unlabeled loaders."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Indices of one epoch: shuffled permutations of ``range(n)`` concatenated up to ``length``
    (a labeled list repeated to the unlabeled length), starting at position ``start``.

    The order depends only on ``(seed, epoch)``, so a resumed run sees the same data.
    """

    def __init__(self, n: int, length: int, seed: int, epoch: int, start: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.n, self.length, self.start = n, length, start
        self.rank, self.world_size = rank, world_size
        self.seed = seed * 100_003 + epoch

    def order(self) -> torch.Tensor:
        """The whole epoch's index order (before sharding across ranks)."""
        g = torch.Generator().manual_seed(self.seed)
        reps = -(-self.length * self.world_size // self.n)
        return torch.cat([torch.randperm(self.n, generator=g) for _ in range(reps)])

    def __iter__(self) -> Iterator[int]:
        mine = self.order()[: self.length * self.world_size][self.rank:: self.world_size]
        return iter(mine[self.start:].tolist())

    def __len__(self) -> int:
        return self.length - self.start
