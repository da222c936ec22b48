"""Deterministic, resumable sample orders for the labeled and unlabeled loaders.

Each epoch's order and each sample's augmentation seed depend only on ``(seed, epoch)``; a
sample's random weak augmentation is drawn under its own seed. So a resumed run, any number of
DataLoader workers and any rank layout see exactly the same images and crops.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """``(index, sample_seed)`` pairs of one epoch: shuffled permutations of ``range(n)``
    concatenated up to ``length`` per process (a labeled list repeated to the unlabeled length),
    sharded across ranks, starting at position ``start``."""

    def __init__(self, n: int, length: int, seed: int, epoch: int, start: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.n, self.length, self.start = n, length, start
        self.rank, self.world_size = rank, world_size
        self.seed = seed * 100_003 + epoch

    def order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole epoch's indices and sample seeds (before sharding across ranks)."""
        g = torch.Generator().manual_seed(self.seed)
        total = self.length * self.world_size
        reps = -(-total // self.n)
        indices = torch.cat([torch.randperm(self.n, generator=g) for _ in range(reps)])[:total]
        return indices, torch.randint(0, 2**62, (total,), generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices, seeds = (t[self.rank:: self.world_size][self.start:] for t in self.order())
        return zip(indices.tolist(), seeds.tolist())

    def __len__(self) -> int:
        return self.length - self.start


class SeededSamples(Dataset):
    """Wraps a dataset so ``ds[(index, seed)]`` draws that sample's augmentation under ``seed``
    (the caller's global RNG stream is left untouched). With ``second_view`` a sample (a dict)
    also holds ``"second"``: the same index drawn again, continuing the same seeded stream, so the
    first view is the one drawn without it and the second is independent of it."""

    def __init__(self, dataset: Dataset, second_view: bool = False):
        self.dataset, self.second_view = dataset, second_view

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sample = self.dataset[index]
            return {**sample, "second": self.dataset[index]} if self.second_view else sample
