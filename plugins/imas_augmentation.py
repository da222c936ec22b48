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

On a strategy that plans its own views (FixMatch, UniMatch, CutMix-Seg, ...), the plugin refines
them instead of planning its own (``refine_views`` keeps them, ``refine_augmentation`` rewrites each
image view's plan): every image view gets the §3a intensity augmentation in place of the
strategy's photometric ops, and a view the strategy CutMixes gets the §3b CutMix instead (fired
with probability ē per view, hard ↔ easy partners, pasting the partner's view; its ground-truth
mixes are kept). UniMatch's views, coefficients and feature view (``fp_dropout`` included) stay
UniMatch's (docs/imas.md, "iMAS on a strategy's views").
"""

from __future__ import annotations

import functools
from typing import Literal

import attrs
import torch
from torch import Tensor

from ssseg.api import (AugmentationPlan, CutMix, Plugin, StepContext, UnlabeledBatch, View, all_reduce_mean_,
                       hookimpl, in_range, positive)
from ssseg.augment import apply_plan, hard_easy_partners, imas_boxes, sample_imas_plan
from ssseg_plugins.imas_hardness import easiness_of

WEAK_VIEW = "x_w"  # the weak batch as a coefficient-0 view (weak_in_forward)
CUTMIX_VIEW = "cutmix"  # §3b's own view


class IMASAugmentation(Plugin):
    """Plans iMAS's adaptive views when no strategy plans views, and makes a strategy's views
    adaptive otherwise (``refine_views``, ``refine_augmentation``)."""

    name = "imas_augmentation"
    requires_hookspec = 6

    @attrs.frozen
    class Config:
        """``adapt``: how e shapes the intensity views: ``blend`` (released), ``magnitude``
        (paper's wording) or ``none`` (fixed strong view). ``n_ops``: ops per strong view.
        ``cutmix``: iMAS's CutMix at all (its own view; on a strategy's views, replacing the
        strategy's CutMix; false keeps the strategy's). ``cutmix_prob``: None = ē (adaptive
        trigger), a number = a fixed probability (the released code's 0.5 without hardness).
        ``cutmix_pairing``: ``hard_easy`` or ``random`` partners. ``weak_in_forward``: also put
        the weak batch through the student forward (a coefficient-0 view: BatchNorm statistics
        only), as the released code does."""

        adapt: Literal["blend", "magnitude", "none"] = "blend"
        n_ops: int = attrs.field(default=2, validator=positive)
        cutmix: bool = True
        cutmix_prob: float | None = attrs.field(default=None, validator=in_range(0, 1))
        cutmix_pairing: Literal["hard_easy", "random"] = "hard_easy"
        weak_in_forward: bool = False

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
    def refine_views(self, ctx: StepContext, views: list[View], hardness: Tensor | None) -> list[View] | None:
        """No strategy views: the intensity view (coef 1, or ½ with the CutMix view when it fires);
        a strategy's views are kept. ``weak_in_forward`` adds the coefficient-0 weak view to
        either."""
        weak = [View(WEAK_VIEW, 0.0)] if self.config.weak_in_forward else []
        if views:
            return views + weak if weak else None
        fired = self.config.cutmix and self._cutmix_fires(ctx, hardness, "cutmix")
        return [View("strong", 0.5 if fired else 1.0)] + ([View(CUTMIX_VIEW, 0.5)] if fired else []) + weak

    @hookimpl
    def refine_augmentation(self, ctx: StepContext, view: View, plan: AugmentationPlan | None,
                            unlabeled: UnlabeledBatch, hardness: Tensor | None) -> AugmentationPlan | None:
        """The weak view stays weak; iMAS's own CutMix view pastes weak images (§3b); any other
        view gets the §3a intensity augmentation, and where the strategy CutMixes it, §3b's CutMix
        (fired per view) in place of the strategy's, ground-truth mixes kept."""
        if view.name == WEAK_VIEW or view.source != "unlabeled":
            return plan
        if view.name == CUTMIX_VIEW and plan is None:  # §3b: sources are the weak images
            return AugmentationPlan(mixes=(self._cutmix(ctx, unlabeled, hardness),))
        photometric, blend = self._intensity(ctx, unlabeled, hardness)
        mixes = () if plan is None else plan.mixes
        if self.config.cutmix and any(m.donor != "labeled" for m in mixes):
            own = (self._cutmix(ctx, unlabeled, hardness),) \
                if self._cutmix_fires(ctx, hardness, f"cutmix_{view.name}") else ()
            mixes = own + tuple(m for m in mixes if m.donor == "labeled")
        return AugmentationPlan(photometric=photometric, blend=blend, mixes=mixes)

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

    def _cutmix(self, ctx: StepContext, unlabeled: UnlabeledBatch, hardness: Tensor | None) -> CutMix:
        """§3b: boxes (one v per batch) and partners (hard ↔ easy by e, or random), pasting the
        partner's view."""
        b, device = unlabeled.image.shape[0], unlabeled.image.device
        box = imas_boxes(b, tuple(unlabeled.image.shape[-2:]), ctx.generator, self.SIDE).to(device)
        if self.config.cutmix_pairing == "hard_easy":
            partner = hard_easy_partners(self._e(hardness))
        else:
            partner = torch.randperm(b, generator=ctx.generator)
        return CutMix(box, partner.to(device))

