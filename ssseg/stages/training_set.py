"""A stage's training data: the labeled set, repeated, plus stored pseudo-label sets read from
earlier stages' folders, as one dataset of labeled samples (the ``stage_training_set`` answer)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import attrs
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from ssseg.data.base import DataBundle
from ssseg.data.io import image_header
from ssseg.errors import UserError
from ssseg.stages.label_store import label_path, read_label, written_ids
from ssseg.stages.types import TrainingSet

LABELS = "labels"  # <stage folder>/labels/<set>/<id>.png


def set_folder(stages_dir: Path, reference: str) -> Path:
    """The folder of pseudo-label set ``"<stage>/<set>"`` under ``<out>/stages``."""
    stage, _, name = reference.partition("/")
    return stages_dir / stage / LABELS / name


class PseudoLabeled(Dataset):
    """The unlabeled images with stored pseudo-labels (``ids``, read from ``folder``) as labeled
    samples ``{"image", "mask"}``: the recipe's weak pipeline on image and label together, then
    ``augment`` (pseudo-labelled samples only)."""

    def __init__(self, unlabeled: Dataset, folder: Path, ids: list[str],
                 augment: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None):
        index = {unlabeled.image_id(i): i for i in range(len(unlabeled))}
        self.unlabeled, self.folder, self.augment = unlabeled, folder, augment
        self.rows = [index[i] for i in ids]
        self.ids = ids

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        image = self.unlabeled.full_image(row)
        sample = self.unlabeled.weak_pair(row, read_label(self.folder, self.ids[i], tuple(image.shape[-2:])))
        if self.augment is not None:
            sample["image"], sample["mask"] = self.augment(sample["image"], sample["mask"])
        return sample


def pseudo_labeled(data: DataBundle, stages_dir: Path, reference: str, readable: tuple[str, ...],
                   augment: Callable | None) -> PseudoLabeled:
    """Set ``reference`` as a :class:`PseudoLabeled` dataset, checked: its stage is one this stage
    reads, its folder holds labels, and each is an image of the unlabeled set."""
    stage, _, name = reference.partition("/")
    if stage not in readable or not name:
        raise UserError(f"stage_training_set: pseudo-label set {reference!r}: give '<stage>/<set>' with a "
                        f"stage this stage reads ({', '.join(readable) or 'none: add it to its reads'})")
    folder = set_folder(stages_dir, reference)
    ids = sorted(written_ids(folder))
    if not ids:
        raise UserError(f"pseudo-label set {reference!r} is empty or missing: no labels in {folder}")
    known = {data.unlabeled.image_id(i) for i in range(len(data.unlabeled))}
    stray = [i for i in ids if i not in known]
    if stray:
        raise UserError(f"{label_path(folder, stray[0])} names no image of the unlabeled set "
                        f"({len(stray)} such files); was it written for another data.split?")
    for image_id in ids:  # headers only: a damaged file is named before training starts
        try:
            image_header(label_path(folder, image_id))
        except UserError as err:
            raise UserError(f"damaged pseudo-label file {err}; delete it and the writing stage's done.json, "
                            "then run the same command again") from None
    return PseudoLabeled(data.unlabeled, folder, ids, augment)


def compose(data: DataBundle, training_set: TrainingSet | None, stages_dir: Path,
            readable: tuple[str, ...]) -> DataBundle:
    """``data`` with its labeled set replaced by the labeled samples ``training_set`` asks for
    (unchanged when None); the unlabeled set stays for the stage's dataset pass."""
    if training_set is None:
        return data
    if training_set.label_sets and data.unlabeled is None:
        raise UserError("stage_training_set: pseudo-label sets need an unlabeled set; set data.split "
                        "to a labeled subset")
    sets = [pseudo_labeled(data, stages_dir, ref, readable, training_set.augment)
            for ref in training_set.label_sets]
    pseudo = sum(len(s) for s in sets)
    copies = training_set.labeled_copies or max(1, math.ceil(pseudo / len(data.labeled)))
    return attrs.evolve(data, labeled=ConcatDataset([data.labeled] * copies + sets))
