"""Applying an :class:`AugmentationPlan`: a view's input image and its (CutMix-mixed) targets."""

from __future__ import annotations

import functools
from typing import Callable

import attrs
import torch
from torch import Tensor

from ssseg.augment import blend, mix_from
from ssseg.engine.types import AugmentationPlan, CutMix, Pseudo

TARGET_FIELDS = ("labels", "conf", "valid", "logits")


@attrs.frozen
class Donors:
    """The batches a plan's CutMixes may paste from besides the view itself: the ``second`` weak
    view (image, and the teacher's eval-mode pseudo-labels of it) and the ``labeled`` batch
    (image, and ``ground_truth()``, its targets, made once when first asked for); None where the
    step has none."""

    second_image: Tensor | None = None
    second_pseudo: Pseudo | None = None
    labeled_image: Tensor | None = None
    ground_truth: Callable[[], Pseudo] | None = attrs.field(
        default=None, converter=lambda f: None if f is None else functools.cache(f))

    def image(self, cut: CutMix, view: Tensor) -> Tensor:
        """The image batch ``cut`` pastes from (after its ``donor_photometric``)."""
        if cut.donor == "view":
            return view
        donor = self.second_image if cut.donor == "second" else self.labeled_image
        return donor if cut.donor_photometric is None else cut.donor_photometric(donor)

    def pseudo(self, cut: CutMix, view: Pseudo) -> Pseudo:
        """The targets ``cut`` pastes from."""
        if cut.donor == "labeled":
            return self.ground_truth()
        return view if cut.donor == "view" else self.second_pseudo


def view_image(plan: AugmentationPlan | None, source: Tensor, donors: Donors) -> Tensor:
    """The input image of one view: the plan's photometric ops and blend on ``source``, then
    each CutMix pasting from its donor."""
    if plan is None:
        return source
    image = source
    if plan.photometric is not None:
        strong = plan.photometric(image)
        image = strong if plan.blend is None else blend(image, strong, plan.blend)
    for cut in plan.mixes:
        donor = donors.image(cut, image)
        image = mix_from(cut.box, [donor[cut.partner.to(donor.device)]], [image])[0]
    return image


def view_pseudo(plan: AugmentationPlan | None, own: Pseudo, donors: Donors,
                partners: Pseudo | None = None) -> Pseudo:
    """The targets of one view: ``own``, with each CutMix's box filled from the partner's entry
    of its donor, in order (labels, confidences, validity and logits move together). A mix whose
    donor is the view itself pastes from ``partners`` instead, mixed alike, when given (the
    ``student_train`` source: own pixels from the train-mode forward, partners' from the
    eval-mode teacher)."""
    if plan is None or not plan.mixes:
        return own
    fields = tuple(f for f in TARGET_FIELDS if getattr(own, f) is not None)

    def pasted(receiver: Pseudo, cut: CutMix, donor: Pseudo) -> Pseudo:
        partner = cut.partner.to(receiver.labels.device)
        mixed = mix_from(cut.box, [getattr(donor, f)[partner] for f in fields], [getattr(receiver, f) for f in fields])
        ignored = None
        if receiver.ignored is not None or donor.ignored is not None:
            ignored = mix_from(cut.box, [ignored_of(donor)[partner]], [ignored_of(receiver)])[0]
        return Pseudo(**dict(zip(fields, mixed)), ignored=ignored)

    for cut in plan.mixes:
        donor = donors.pseudo(cut, own if partners is None else partners)
        if partners is not None:
            partners = pasted(partners, cut, donor)
        own = pasted(own, cut, donor)
    return own


def ignored_of(pseudo: Pseudo) -> Tensor:
    """``pseudo.ignored``, or no pixel ignored ``[B,H,W]`` when it is None."""
    return torch.zeros_like(pseudo.valid) if pseudo.ignored is None else pseudo.ignored
