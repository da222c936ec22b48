"""The values that travel through the hooks: step context, pseudo-labels, views and plans."""

from __future__ import annotations

from typing import Callable, Literal

import attrs
import torch
from torch import Tensor, nn


@attrs.define
class StepContext:
    """What every step hook receives as ``ctx``.

    ``generator`` is per rank (per-sample randomness); ``shared_generator`` is seeded alike on
    every rank and must be used for random choices that change control flow (fire CutMix?).
    ``teacher`` is the module that makes pseudo-labels: the EMA teacher, or the student itself
    for online strategies. ``log(name, value)`` records a scalar for this step.
    """

    iteration: int
    max_iters: int
    epoch: int
    iters_per_epoch: int
    device: torch.device
    rank: int
    world_size: int
    generator: torch.Generator
    shared_generator: torch.Generator
    student: nn.Module
    teacher: nn.Module
    num_classes: int
    ignore_index: int
    logs: dict[str, float] = attrs.field(factory=dict)

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return self.iteration / self.max_iters

    def log(self, name: str, value: float | Tensor) -> None:
        """Record a scalar for this step (written to metrics.jsonl every ``run.log_every``)."""
        self.logs[name] = float(value)


@attrs.frozen
class UnlabeledBatch:
    """The weak unlabeled batch: images ``[B,3,H,W]`` in [0, 1] and ``valid`` ``[B,H,W]``."""

    image: Tensor
    valid: Tensor


@attrs.frozen
class Pseudo:
    """Pseudo-labels of one view: ``labels`` (argmax) and ``conf`` (max softmax) ``[B,H,W]``,
    ``valid`` ``[B,H,W]`` (False on padding), and the teacher's ``logits`` ``[B,C,H,W]`` on the
    weak view (None once the view was mixed)."""

    labels: Tensor
    conf: Tensor
    valid: Tensor
    logits: Tensor | None = None


@attrs.frozen
class View:
    """One unlabeled view the student trains on.

    ``kind="image"``: an augmented copy of the weak batch, planned by ``schedule_augmentation``.
    ``kind="feature"``: the decoder applied to Dropout2d(``dropout``) of the weak batch's encoder
    features (UniMatch's feature perturbation). ``coef`` multiplies this view's loss.
    """

    name: str
    coef: float = 1.0
    kind: Literal["image", "feature"] = "image"
    dropout: float = 0.5


@attrs.frozen
class AugmentationPlan:
    """How to build one image view from the weak batch, applied by the core in this order:

    1. ``photometric(weak) -> strong`` (batched, per-sample parameters already drawn);
    2. ``blend`` ``[B]``: x = blend·strong + (1 − blend)·weak (None: x = strong);
    3. ``cutmix_box`` ``[B,H,W]`` bool with ``cutmix_partner`` ``[B]``: inside the box of image
       i, the image, pseudo-label, confidence and validity come from image ``partner[i]``.
    """

    photometric: Callable[[Tensor], Tensor] | None = None
    blend: Tensor | None = None
    cutmix_box: Tensor | None = None
    cutmix_partner: Tensor | None = None


@attrs.frozen
class StudentOutputs:
    """The student's train-mode logits of one step: ``labeled`` ``[Bl,C,H,W]``, each view's
    logits by name, ``weak`` when the weak batch was part of the forward, and ``aux`` (the
    auxiliary head's logits of the labeled images) with ``model.aux_head``."""

    labeled: Tensor
    views: dict[str, Tensor]
    weak: Tensor | None = None
    aux: Tensor | None = None
