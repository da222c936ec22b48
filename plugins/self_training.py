"""Self-training, ST and ST++ (Yang et al., CVPR 2022; released code LiheYoung/ST-PlusPlus), on
the staged training of ``ssseg`` (a recipe's ``stages``; docs/hooks.md, phase ``stage``).

**ST** (``st``, two stages). Stage 1 trains on the labeled images alone. Its best-val model labels
every unlabeled image offline: the mean softmax over the scales {0.5, 0.75, 1, 1.5, 2} × {image,
flipped}, argmax, hard labels without threshold. Stage 2 re-trains a fresh model on the labeled
images and all pseudo-labelled ones, with strong data augmentation (SDA) on the pseudo-labelled
images only: ColorJitter(0.5, 0.5, 0.5, 0.25) w.p. 0.8, grayscale w.p. 0.2, blur σ ~ U[0.1, 2]
w.p. 0.5, Cutout w.p. 0.5 with the label set to 255 inside the box.

**ST++** (``st_plus_plus``, three stages). Stage 1 also keeps snapshots at the end of epochs
⌊E/3⌋, ⌊2E/3⌋ and E (E = optim.iters / iterations per epoch). Each unlabeled image's stability
score is computed from the three snapshots' single-scale argmax maps M1, M2, M3:

    s = ½ [mIoU(M1, M3) + mIoU(M2, M3)],   mIoU(P, R) = nanmean_c |P=c ∧ R=c| / |P=c ∨ R=c|

over the classes present in either map of that image. The ⌊N·R⌋ images of highest s (R = 0.5,
a stable sort: ties keep the dataset's order) are reliable, the rest unreliable. The stage-1 best
model labels the reliable images (TTA as in ST); stage 2 re-trains from scratch on labeled +
reliable; its best model labels only the unreliable images; stage 3 re-trains from scratch on
labeled + all (the reliable half keeps its stage-1 labels).

Each re-training repeats the labeled list ⌈N_pseudo/N_labeled⌉ times and shuffles it with the
pseudo-labelled images into one set of labeled samples (one cross-entropy over the mixed batch),
as released. Departure: stage 1 does not repeat a labeled list of fewer than 200 ids twice (it
would only lengthen the epoch that places the snapshots).
"""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

import attrs
import torch
from torch import Tensor

from ssseg.api import DatasetPass, Plugin, Stage, TrainingSet, UserError, hookimpl, in_range, positive
from ssseg.augment.cutout import cutout
from ssseg.augment.photometric import apply_plan, sample_fixmatch_plan

PSEUDO = "pseudo"  # each labelling stage's pseudo-label set: <stage>/labels/pseudo/<id>.png
RELIABLE, UNRELIABLE = "reliable", "unreliable"  # ST++ stage 1's id lists


def image_miou(pred: Tensor, ref: Tensor, num_classes: int) -> Tensor:
    """Per-image mIoU ``[B]`` of label maps ``pred`` against ``ref`` (both ``[B,H,W]``): the mean
    IoU over the classes present in either map of that image (released ``utils.meanIOU`` on one
    image: a class absent from both is left out)."""
    p = torch.nn.functional.one_hot(pred.flatten(1).long(), num_classes).bool()
    r = torch.nn.functional.one_hot(ref.flatten(1).long(), num_classes).bool()
    inter, union = (p & r).sum(1).double(), (p | r).sum(1).double()
    return torch.nanmean(inter / union, dim=1)  # union 0 -> nan -> left out


def stability(maps: Sequence[Tensor], num_classes: int) -> Tensor:
    """ST++'s score ``[B]`` of the snapshots' label maps (M1, ..., Mk), the last the reference:
    the mean of mIoU(M_i, M_k) over i < k (½[mIoU(M1, M3) + mIoU(M2, M3)] for three)."""
    *earlier, ref = maps
    return torch.stack([image_miou(m, ref, num_classes) for m in earlier]).mean(0)


def reliable_split(ids: Sequence[str], scores: Tensor, share: float = 0.5) -> tuple[list[str], list[str]]:
    """(reliable, unreliable): the ⌊N·share⌋ ids of highest score first, by a stable descending
    sort (equal scores keep the order of ``ids``), and the rest in that order."""
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    ranked = [ids[i] for i in order]
    cut = int(len(ids) * share)
    return ranked[:cut], ranked[cut:]


def snapshot_iterations(iters: int, iters_per_epoch: int) -> tuple[int, int, int]:
    """The iterations that end epochs ⌊E/3⌋, ⌊2E/3⌋ and E, E = iters // iters_per_epoch (the
    last is ``iters`` itself)."""
    epochs = iters // iters_per_epoch
    if epochs < 3:
        raise UserError(f"st_plus_plus: the first stage trains {epochs} epoch(s) of {iters_per_epoch} "
                        "iterations; it needs at least 3 for its snapshots: raise optim.iters")
    return epochs // 3 * iters_per_epoch, 2 * epochs // 3 * iters_per_epoch, iters


def strong_augment(image: Tensor, mask: Tensor, p_jitter: float, p_gray: float, p_blur: float,
                   p_cutout: float) -> tuple[Tensor, Tensor]:
    """SDA of one pseudo-labelled sample (the module doc), drawn from torch's global generator
    (the data feed seeds it per sample)."""
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
    plan = sample_fixmatch_plan(1, g, p_jitter=p_jitter, p_gray=p_gray, p_blur=p_blur)
    return cutout(apply_plan(image[None], plan)[0], mask, g, p=p_cutout)


class SelfTraining(Plugin):
    """ST: supervised stage, offline TTA pseudo-labels from its best model, re-training."""

    name = "st"
    requires_hookspec = 7  # the stage hooks
    stages = 2

    @attrs.frozen
    class Config:
        """``tta_scales``/``tta_flip``: the labelling forwards (released: 5 scales × flip);
        ``p_*``: SDA's probabilities; ``pass_batch``: images per labelling forward (images of one
        size only; released: 1); ``reliable_share`` (ST++): R, the reliable share."""

        tta_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)
        tta_flip: bool = True
        p_jitter: float = attrs.field(default=0.8, validator=in_range(0, 1))
        p_gray: float = attrs.field(default=0.2, validator=in_range(0, 1))
        p_blur: float = attrs.field(default=0.5, validator=in_range(0, 1))
        p_cutout: float = attrs.field(default=0.5, validator=in_range(0, 1))
        pass_batch: int = attrs.field(default=1, validator=positive)
        reliable_share: float = attrs.field(default=0.5, validator=in_range(0, 1, lo_open=True, hi_open=True))

    @hookimpl
    def validate(self, recipe) -> None:
        """The staged recipe has this method's stages, each reading every earlier one; every
        stage trains on labeled samples only (no unlabeled batch)."""
        key = f"plugins.{self.recipe_key}"
        if recipe.data.batch_unlabeled:
            raise UserError(f"{key}: trains on labeled and pseudo-labelled samples in one batch; set "
                            "data.batch_unlabeled: 0 (data.batch_labeled is the whole batch)")
        if not recipe.stages:
            return  # one stage's recipe (the staged recipe was checked whole)
        if len(recipe.stages) != self.stages:
            raise UserError(f"{key}: needs {self.stages} stages (supervised, then re-training), the "
                            f"recipe has {len(recipe.stages)}; see recipes/{self.name}.yaml")
        for i, stage in enumerate(recipe.stages):
            earlier = [s.name for s in recipe.stages[:i]]
            if sorted(stage.reads) != sorted(earlier):
                raise UserError(f"stages[{i}].reads: {self.name} stage {stage.name!r} reads every earlier "
                                f"stage: set it to {earlier}")

    @hookimpl
    def stage_training_set(self, stage: Stage) -> TrainingSet | None:
        """Stage 1: the labeled images; later stages: plus every earlier stage's pseudo-labels,
        SDA on them only."""
        if stage.index == 0:
            return None
        c = self.config
        augment = functools.partial(strong_augment, p_jitter=c.p_jitter, p_gray=c.p_gray, p_blur=c.p_blur,
                                    p_cutout=c.p_cutout)
        return TrainingSet(label_sets=tuple(f"{name}/{PSEUDO}" for name in stage.names[:stage.index]),
                           augment=augment)

    @hookimpl
    def after_stage(self, stage: Stage, dataset_pass: DatasetPass) -> None:
        """Stage 1's best model labels every unlabeled image (nothing after the last stage)."""
        if stage.index == 0:
            self.label(dataset_pass, dataset_pass.ids())

    def label(self, dataset_pass: DatasetPass, ids: Iterable[str]) -> None:
        """Label ``ids`` with this stage's best model (TTA) into its set ``pseudo``; ids a killed
        pass labelled already are not redone."""
        c, name = self.config, dataset_pass.stage.name
        todo = dataset_pass.missing_labels(PSEUDO, ids)
        best = dataset_pass.checkpoint(name, "best")
        for batch in dataset_pass.predict([best], todo, scales=c.tta_scales, flip=c.tta_flip,
                                          batch_size=c.pass_batch):
            dataset_pass.write_labels(PSEUDO, batch.ids, batch.labels[0])


class STPlusPlus(SelfTraining):
    """ST++: the reliable half first (stability over three stage-1 snapshots), then the rest."""

    name = "st_plus_plus"
    stages = 3

    @hookimpl
    def stage_snapshots(self, stage: Stage, iters_per_epoch: int) -> tuple[int, ...] | None:
        """Stage 1 keeps the ends of epochs ⌊E/3⌋, ⌊2E/3⌋ and E."""
        if stage.index != 0:
            return None
        return snapshot_iterations(stage.recipe.optim.iters, iters_per_epoch)

    @hookimpl
    def after_stage(self, stage: Stage, dataset_pass: DatasetPass) -> None:
        """Stage 1: score and split the unlabeled images (once), label the reliable ones with its
        best model; stage 2: label the unreliable ones with its best model."""
        first = stage.names[0]
        if stage.index == 0:
            if not dataset_pass.has_ids(UNRELIABLE):
                self.split(stage, dataset_pass)
            self.label(dataset_pass, dataset_pass.read_ids(RELIABLE))
        elif stage.index == 1:
            self.label(dataset_pass, dataset_pass.read_ids(UNRELIABLE, stage=first))

    def split(self, stage: Stage, dataset_pass: DatasetPass) -> None:
        """Stability of every unlabeled image from the three snapshots (single scale, no flip);
        writes the id lists ``reliable`` and ``unreliable``."""
        kept = dataset_pass.snapshots()
        if len(kept) != 3:
            raise UserError(f"st_plus_plus: stage {stage.name!r} kept the snapshots {list(kept)}, not "
                            f"three; delete {stage.folder} and run the same command again")
        snapshots = [dataset_pass.checkpoint(stage.name, it) for it in kept]
        ids, scores = [], []
        for batch in dataset_pass.predict(snapshots, batch_size=self.config.pass_batch):
            ids += batch.ids
            scores.append(stability(batch.labels, dataset_pass.num_classes))
        reliable, unreliable = reliable_split(ids, torch.cat(scores), self.config.reliable_share)
        dataset_pass.write_ids(RELIABLE, reliable)
        dataset_pass.write_ids(UNRELIABLE, unreliable)
