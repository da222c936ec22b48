"""Applying an :class:`AugmentationPlan`: a view's input image and its (CutMix-mixed) pseudo-labels."""

from __future__ import annotations

from torch import Tensor

from ssseg.augment import blend, mix, mix_from
from ssseg.engine.types import AugmentationPlan, Pseudo


def view_image(plan: AugmentationPlan | None, weak: Tensor, second: Tensor | None = None) -> Tensor:
    """The input image of one view: the plan's photometric ops, blend and CutMix on ``weak``; the
    CutMix boxes paste from this image batch, or from ``second`` (the second weak view) after the
    plan's ``donor_photometric`` when its ``cutmix_donor`` is ``"second"``."""
    if plan is None:
        return weak
    image = weak
    if plan.photometric is not None:
        strong = plan.photometric(image)
        image = strong if plan.blend is None else blend(image, strong, plan.blend)
    if plan.cutmix_box is None:
        return image
    if plan.cutmix_donor == "view":
        return mix(plan.cutmix_box, plan.cutmix_partner, image)[0]
    donor = second if plan.donor_photometric is None else plan.donor_photometric(second)
    return mix_from(plan.cutmix_box, [donor[plan.cutmix_partner.to(donor.device)]], [image])[0]


def view_pseudo(plan: AugmentationPlan | None, own: Pseudo, donor: Pseudo) -> Pseudo:
    """The pseudo-labels of one view: ``own``, with each CutMix box filled from the partner's
    entry of ``donor`` (labels, confidences, validity and logits move together)."""
    if plan is None or plan.cutmix_box is None:
        return own
    partner = plan.cutmix_partner
    fields = ("labels", "conf", "valid") + (("logits",) if own.logits is not None else ())
    mixed = mix_from(plan.cutmix_box, [getattr(donor, f)[partner.to(own.labels.device)] for f in fields],
                     [getattr(own, f) for f in fields])
    return Pseudo(**dict(zip(fields, mixed)))
