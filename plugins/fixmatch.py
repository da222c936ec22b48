"""FixMatch for semantic segmentation (Sohn et al. 2020; the segmentation version of Yang et al.,
CVPR 2023). The teacher (the online student, or an EMA teacher) labels the weak view x_w in eval
mode, ŷ = argmax p(x_w), conf = max p(x_w); the student learns ŷ on one strong view

    x_s = CutMix(A_s(x_w), A_s(x_w^mix))
    A_s = ColorJitter(0.5, 0.5, 0.5, 0.25) w.p. 0.8 → grayscale w.p. 0.2 → blur σ~U[0.1, 2] w.p. 0.5
    CutMix w.p. 0.5: a box of area U[0.02, 0.4]·H·W and aspect U[0.3, 1/0.3] fully inside the crop;
    inside it the image, ŷ, conf and validity come from the mix batch

    L_u = Σ_p CE(f(x_s)_p, ŷ_p) · 1[conf_p ≥ τ] · valid_p / Σ_p valid_p,     L = (L_x + L_u) / 2

With ``pseudo_labels: student_train`` (the released code) ŷ and conf come from the student's
train-mode forward of cat(x, x_w) (its BatchNorm statistics; detached), while the mix partner's
come from the eval-mode forward, as the released code labels its separate mix batch.

The mix partner (``mix_partner``): ``other_image`` (default) is the batch reversed (image i
receives from image B−1−i, never itself for even B); ``same_image`` is the released pairing:
the released loop zips the unlabeled loader with itself, and the two passes of one epoch's
sampler yield the same images in the same order under independent augmentation, so image i
receives from another random weak view of the same image (``unlabeled.second``), strong-augmented
with its own draws and labelled by the teacher in eval mode (UniMatch issue #51). The threshold τ
comes from ``confidence_threshold``, the halves from ``unsup: {weight: 0.5, supervised_weight: 0.5}``.
"""

from __future__ import annotations

import functools
from typing import Literal

import attrs
import torch

from ssseg.api import AugmentationPlan, CutMix, FeatureRequest, Plugin, StepContext, UnlabeledBatch, View, hookimpl, in_range
from ssseg.augment.cutmix import fixmatch_boxes
from ssseg.augment.photometric import apply_plan, sample_fixmatch_plan


class FixMatch(Plugin):
    """One strong view "strong" (coefficient 1), colour-jittered, blurred and CutMixed."""

    name = "fixmatch"
    requires_hookspec = 4  # mix_partner: same_image (the second weak view)

    @attrs.frozen
    class Config:
        """Probabilities of A_s's colour jitter, grayscale and blur, and of CutMix.
        ``pseudo_labels``: ``teacher`` (the eval-mode teacher or online student labels x_w) or
        ``student_train`` (released: ŷ from the student's train-mode forward of cat(x, x_w),
        detached; the mix partner labelled in eval mode). ``mix_partner``: ``other_image`` (the
        reversed batch) or ``same_image`` (another random weak view of the same image, as
        released)."""

        p_jitter: float = attrs.field(default=0.8, validator=in_range(0, 1))
        p_gray: float = attrs.field(default=0.2, validator=in_range(0, 1))
        p_blur: float = attrs.field(default=0.5, validator=in_range(0, 1))
        p_cutmix: float = attrs.field(default=0.5, validator=in_range(0, 1))
        pseudo_labels: Literal["teacher", "student_train"] = "teacher"
        mix_partner: Literal["other_image", "same_image"] = "other_image"

    @hookimpl
    def pseudo_label_source(self) -> str:
        """Where ŷ comes from (``pseudo_labels``)."""
        return self.config.pseudo_labels

    @hookimpl
    def request_features(self) -> FeatureRequest | None:
        """A second weak view of every unlabeled image with ``mix_partner: same_image``."""
        return FeatureRequest(second_view=True) if self.config.mix_partner == "same_image" else None

    @hookimpl
    def plan_views(self) -> list[View]:
        """x_s, with loss coefficient 1."""
        return [View("strong", coef=1.0)]

    @hookimpl
    def schedule_augmentation(self, ctx: StepContext, unlabeled: UnlabeledBatch) -> AugmentationPlan:
        """Fresh per-sample draws of A_s and of a CutMix box from ``ctx.generator`` on every call,
        so two views of one step are independent; the partner is the reversed batch, or
        (``same_image``) the same image's second weak view under its own draw of A_s."""
        c = self.config
        b, _, h, w = unlabeled.image.shape
        draw_strong = functools.partial(sample_fixmatch_plan, b, ctx.generator, p_jitter=c.p_jitter,
                                        p_gray=c.p_gray, p_blur=c.p_blur)
        photometric = functools.partial(apply_plan, plan=draw_strong())
        box = fixmatch_boxes(b, (h, w), ctx.generator, p=c.p_cutmix).to(ctx.device)
        if c.mix_partner == "other_image":
            return AugmentationPlan(photometric=photometric,
                                    mixes=(CutMix(box, torch.arange(b - 1, -1, -1, device=ctx.device)),))
        cut = CutMix(box, torch.arange(b, device=ctx.device), donor="second",
                     donor_photometric=functools.partial(apply_plan, plan=draw_strong()))
        return AugmentationPlan(photometric=photometric, mixes=(cut,))
