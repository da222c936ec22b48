"""The length of the released training protocols, for the paper recipes' ``optim.iters``.

The released iMAS, U2PL, FixMatch and UniMatch loaders shard the unlabeled set with PyTorch's
``DistributedSampler`` over P processes, which pads every process's share to ⌈|U|/P⌉ samples
(repeating the first ones), and batch it with ``drop_last=True``; an epoch is one pass of that
loader. So an epoch is ⌊⌈|U|/P⌉/B⌋ iterations at B unlabeled images per process, one more than
⌊|U|/(B·P)⌋ whenever the padding completes a last batch (iMAS VOC 1,464 labels: 570, not 569; the
released logs print the last step index, 569). ssseg's own epoch (the unit of
``eval.every_epochs`` and of plugins' epoch counts) stays ⌊|U|/(B·P)⌋: each image once, no padding.
"""

from __future__ import annotations


def released_iters_per_epoch(unlabeled: int, batch: int, gpus: int) -> int:
    """⌊⌈|U|/P⌉/B⌋: iterations per epoch of a ``DistributedSampler`` (padded to ⌈|U|/P⌉ per
    process) with ``drop_last`` batches of ``batch`` B, over ``unlabeled`` |U| images on ``gpus``
    P processes."""
    if unlabeled < 0 or batch < 1 or gpus < 1:
        raise ValueError(f"need unlabeled >= 0, batch >= 1, gpus >= 1 (got {unlabeled}, {batch}, {gpus})")
    return -(-unlabeled // gpus) // batch
