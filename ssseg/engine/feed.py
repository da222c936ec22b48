"""The data feed of a training run: (labeled, unlabeled) batches from any iteration on, epoch
after epoch, each epoch's order drawn from the seed so that a resumed run sees the same batches."""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ssseg.engine.run import Run
from ssseg.engine.sampling import EpochSampler, SeededSamples
from ssseg.engine.types import UnlabeledBatch
from ssseg.errors import UserError


class DataFeed:
    """Batches for ``run``: labeled ones, and unlabeled ones when the recipe has an unlabeled
    batch. An epoch is one pass over the unlabeled set (the labeled set without one), per process."""

    def __init__(self, run: Run):
        self.run = run
        r = run.recipe
        self.unsupervised = run.data.unlabeled is not None and r.data.batch_unlabeled > 0
        n_epoch_items = len(run.data.unlabeled) if self.unsupervised else len(run.data.labeled or ())
        batch = r.data.batch_unlabeled if self.unsupervised else r.data.batch_labeled
        self.iters_per_epoch = n_epoch_items // (batch * run.world_size)
        if self.iters_per_epoch == 0 and run.data.labeled is not None:  # None: built to evaluate
            raise UserError(f"data: {n_epoch_items} {'unlabeled' if self.unsupervised else 'labeled'} "
                            f"images are fewer than one batch of {batch} per process")

    def batches(self) -> Iterator[tuple[dict[str, Tensor], UnlabeledBatch | None]]:
        """(labeled, unlabeled) batches from the current iteration on, epoch after epoch."""
        run, r = self.run, self.run.recipe
        while True:
            epoch, start = divmod(run.iteration, self.iters_per_epoch)
            labeled = self.loader(run.data.labeled, r.data.batch_labeled, epoch, start, salt=1)
            if not self.unsupervised:
                for batch in labeled:
                    yield self.to_device(batch), None
                continue
            unlabeled = self.loader(run.data.unlabeled, r.data.batch_unlabeled, epoch, start, salt=2,
                                    second_view=run.features.second_view)
            for lb, ub in zip(labeled, unlabeled):
                yield self.to_device(lb), unlabeled_batch(self.to_device(ub))

    def loader(self, dataset, batch: int, epoch: int, start: int, salt: int,
               second_view: bool = False) -> DataLoader:
        """A loader over one epoch's share of ``dataset``, resuming at batch ``start``; with
        ``second_view`` each sample also holds a second weak view of its image (``"second"``)."""
        run, r = self.run, self.run.recipe
        sampler = EpochSampler(len(dataset), self.iters_per_epoch * batch, r.seed * 10 + salt, epoch,
                               start * batch, run.rank, run.world_size)
        # an explicit generator keeps the loader's worker seeding off the global RNG stream
        return DataLoader(SeededSamples(dataset, second_view), batch_size=batch, sampler=sampler,
                          drop_last=True, num_workers=r.data.workers, pin_memory=run.device.type == "cuda",
                          generator=torch.Generator().manual_seed(r.seed * 7919 + epoch))

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Move a collated batch (and the batches nested in it) to the run's device."""
        return {k: v.to(self.run.device, non_blocking=True) if isinstance(v, Tensor)
                else self.to_device(v) if isinstance(v, dict) else v for k, v in batch.items()}


def unlabeled_batch(batch: dict[str, Any]) -> UnlabeledBatch:
    """The :class:`UnlabeledBatch` of a collated unlabeled batch, with its second view if loaded."""
    second = batch.get("second")
    return UnlabeledBatch(image=batch["image"], valid=batch["valid"],
                          second=None if second is None else unlabeled_batch(second))
