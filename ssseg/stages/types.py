"""The values the stage hooks receive and return."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import attrs
from torch import Tensor

from ssseg.recipe.schema import Recipe


@attrs.frozen
class Stage:
    """One stage of a staged recipe, as its hooks see it: ``name``, ``index`` (0-based) among
    ``names`` (every stage in order), ``reads`` (the earlier stages it may read), ``recipe`` (this
    stage's recipe: the staged recipe with the stage's patch, without ``stages``) and ``folder``
    (``<out>/stages/<name>/``, its run folder)."""

    name: str
    index: int
    names: tuple[str, ...]
    reads: tuple[str, ...]
    recipe: Recipe
    folder: Path

    @property
    def is_last(self) -> bool:
        """Whether this is the final stage (the one whose model the staged run reports)."""
        return self.index == len(self.names) - 1


@attrs.frozen
class TrainingSet:
    """A ``stage_training_set`` answer: train this stage on the labeled set plus the stored
    pseudo-label sets ``label_sets`` (each ``"<stage>/<set>"``, written by an earlier stage's
    ``after_stage``), as one shuffled set of labeled samples.

    The labeled list is repeated ``labeled_copies`` times (None: ⌈N_pseudo / N_labeled⌉, as
    ST/ST++ mix them); ``augment(image [3,h,w] in [0,1], mask [h,w]) -> (image, mask)`` runs on each
    pseudo-labelled sample after the recipe's weak pipeline (not on labeled samples), drawing its
    randomness from torch's global generator, which the data feed seeds per sample."""

    label_sets: tuple[str, ...]
    labeled_copies: int | None = None
    augment: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None


@attrs.frozen
class PassBatch:
    """One batch of a dataset pass (:meth:`DatasetPass.predict`): the unlabeled images' ``ids``
    and, for each checkpoint asked for in order, class probabilities ``[B,C,H,W]`` at the images'
    own size (images of one batch share their size)."""

    ids: tuple[str, ...]
    probs: tuple[Tensor, ...]

    @property
    def labels(self) -> tuple[Tensor, ...]:
        """Each checkpoint's argmax label maps ``[B,H,W]``."""
        return tuple(p.argmax(1) for p in self.probs)
