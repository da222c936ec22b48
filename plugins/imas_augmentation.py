"""iMAS §3: model-adaptive augmentation, an adaptive intensity view and an adaptive CutMix view.

With easiness e_i = 1 − γ_i of each weak unlabeled image x_i (from ``estimate_hardness``):

§3a intensity view (``adapt: blend``, the released behaviour; the paper's equation has the
direction reversed, which the authors confirmed):

    s_i = A_s(x_i)                    2 ops drawn uniformly with replacement from the 12 iMAS ops
    x̃_i = e_i · s_i + (1 − e_i) · x_i   hard images stay close to the weak view

``adapt: magnitude`` instead scales the op magnitudes by e_i (the paper's wording); ``adapt: none``
is the fixed strong view s_i.

§3b adaptive CutMix view, built with probability ē = mean_i e_i:

    v ~ U(0.1, 0.9) once per batch;  box_i of int(H·v) × int(W·v) around a random centre
    partner: sort by e ascending; rank k receives from rank B−1−k (hard ↔ easy)
    x^cm_i = box_i ⊙ x_partner(i) + (1 − box_i) ⊙ x_i    sources are the WEAK images; ŷ, conf alike

    L_u = ½ (L_int + L_cm) if CutMix fired, else L_int       (view coefficients)

``views: unimatch`` plans UniMatch's views instead and makes each adaptive (docs/imas.md).
"""

from __future__ import annotations

import functools
from typing import Literal

import attrs
import torch
from torch import Tensor

from ssseg.api import (AugmentationPlan, Plugin, Pseudo, StepContext, UnlabeledBatch, View,
                       all_reduce_mean_, hookimpl, in_range, positive)
from ssseg.augment import apply_plan, hard_easy_partners, imas_boxes, sample_imas_plan
from ssseg_plugins.imas_hardness import easiness_of

WEAK_VIEW = "x_w"  # the weak batch as a coefficient-0 view (weak_in_forward)


def _weak_in_forward_needs_imas_views(config, attribute, value: bool) -> None:
    if value and config.views == "unimatch":
        err = ValueError("views: unimatch already forwards the weak batch (its feature view); "
                         "leave weak_in_forward false")
        err.ssseg_field = attribute.name
        raise err


class IMASAugmentation(Plugin):
    """Answers ``plan_views`` and ``schedule_augmentation`` with iMAS's adaptive views."""

    name = "imas_augmentation"
    requires_hookspec = 5

    @attrs.frozen
    class Config:
        """``views``: ``imas`` (intensity view + CutMix view) or ``unimatch`` (s1, s2 at 0.25 and
        the feature view at 0.5, each image view adaptive and CutMixed as UniMatch does).
        ``adapt``: how e shapes the intensity views: ``blend`` (released), ``magnitude`` (paper's
        wording) or ``none`` (fixed strong view). ``n_ops``: ops per strong view.
        ``cutmix``: build CutMix at all. ``cutmix_prob``: None = ē (adaptive trigger), a number =
        a fixed probability (the released code's 0.5 without hardness). ``cutmix_pairing``:
        ``hard_easy`` or ``random`` partners. ``weak_in_forward``: also put the weak batch
        through the student forward (a coefficient-0 view: BatchNorm statistics only), as the
        released code does."""

        views: Literal["imas", "unimatch"] = "imas"
        adapt: Literal["blend", "magnitude", "none"] = "blend"
        n_ops: int = attrs.field(default=2, validator=positive)
        cutmix: bool = True
        cutmix_prob: float | None = attrs.field(default=None, validator=in_range(0, 1))
        cutmix_pairing: Literal["hard_easy", "random"] = "hard_easy"
        weak_in_forward: bool = attrs.field(default=False, validator=_weak_in_forward_needs_imas_views)

    SIDE = (0.1, 0.9)  # range of the CutMix box side ratio v (released use_cutmix_range)

    @property
    def uses_hardness(self) -> bool:
        """Whether any option reads e."""
        c = self.config
        return c.adapt != "none" or (c.cutmix and (c.cutmix_prob is None or c.cutmix_pairing == "hard_easy"))

    @property
    def requires(self) -> dict[str, str]:
        """A hardness estimator, when an option reads e."""
        return {"estimate_hardness": "imas_hardness"} if self.uses_hardness else {}

    @hookimpl
    def plan_views(self, ctx: StepContext, hardness: Tensor | None) -> list[View]:
        """imas: the intensity view (coef 1, or ½ with the CutMix view when it fires) and the
        optional coefficient-0 weak view; unimatch: s1, s2 (¼ each) and the feature view (½)."""
        if self.config.views == "unimatch":
            return [View("s1", 0.25), View("s2", 0.25), View("fp", 0.5, kind="feature")]
        fired = self.config.cutmix and self._cutmix_fires(ctx, hardness, "cutmix")
        views = [View("strong", 0.5 if fired else 1.0)]
        views += [View("cutmix", 0.5)] if fired else []
        views += [View(WEAK_VIEW, 0.0)] if self.config.weak_in_forward else []
        return views

    @hookimpl
    def schedule_augmentation(self, ctx: StepContext, view: View, unlabeled: UnlabeledBatch,
                              pseudo: Pseudo, hardness: Tensor | None) -> AugmentationPlan | None:
        """The per-image plan of ``view``: intensity (strong ops, blend), CutMix (box, partner)."""
        if view.name == WEAK_VIEW:
            return None
        if view.name == "cutmix":  # §3b: sources are the weak images
            box, partner = self._cutmix(ctx, unlabeled, hardness)
            return AugmentationPlan(cutmix_box=box, cutmix_partner=partner)
        photometric, blend = self._intensity(ctx, unlabeled, hardness)
        if self.config.views == "unimatch" and self.config.cutmix and \
                self._cutmix_fires(ctx, hardness, f"cutmix_{view.name}"):
            box, partner = self._cutmix(ctx, unlabeled, hardness)  # UniMatch: sources are the strong views
            return AugmentationPlan(photometric=photometric, blend=blend, cutmix_box=box, cutmix_partner=partner)
        return AugmentationPlan(photometric=photometric, blend=blend)

    def _e(self, hardness: Tensor | None) -> Tensor:
        return easiness_of(hardness, self.recipe_key)

    # -- the two augmentations -----------------------------------------------------------------

    def _intensity(self, ctx: StepContext, unlabeled: UnlabeledBatch, hardness: Tensor | None):
        """§3a: s_i = A_s(x_i) with magnitudes scaled by e_i (``magnitude``), and the blend
        factor e_i of x̃_i = e_i·s_i + (1 − e_i)·x_i (``blend``)."""
        adapt = self.config.adapt
        e = None if adapt == "none" else self._e(hardness).to(unlabeled.image)
        ops = sample_imas_plan(unlabeled.image.shape[0], ctx.generator, self.config.n_ops,
                               magnitude_scale=e if adapt == "magnitude" else None)
        return functools.partial(apply_plan, plan=ops), e if adapt == "blend" else None

    def _cutmix_fires(self, ctx: StepContext, hardness: Tensor | None, name: str) -> bool:
        """Bernoulli(ē) (or the fixed ``cutmix_prob``) from the shared generator; ē is averaged
        over all processes so that every rank takes the same decision."""
        p = self.config.cutmix_prob
        if p is None:
            p = float(all_reduce_mean_(self._e(hardness).mean()))
        fired = bool(torch.rand((), generator=ctx.shared_generator) < p)
        ctx.log(f"imas/{name}", float(fired))
        return fired

    def _cutmix(self, ctx: StepContext, unlabeled: UnlabeledBatch, hardness: Tensor | None):
        """§3b: boxes (one v per batch) and partners (hard ↔ easy by e, or random)."""
        b, device = unlabeled.image.shape[0], unlabeled.image.device
        box = imas_boxes(b, tuple(unlabeled.image.shape[-2:]), ctx.generator, self.SIDE).to(device)
        if self.config.cutmix_pairing == "hard_easy":
            partner = hard_easy_partners(self._e(hardness))
        else:
            partner = torch.randperm(b, generator=ctx.generator)
        return box, partner.to(device)

