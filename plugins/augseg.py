"""AugSeg (Zhao, Yang, Long, Pi, Zhou, Wang, CVPR 2023): "augmentation matters", a mean teacher
whose student sees a random intensity view of the unlabeled crop, CutMixed with the batch and, for
images the teacher is unsure of, with labeled patches. As released (ZhenZHAO/AugSeg at 7ead870,
``train_semi.py``, ``augs_TIBA.py``, ``augs_ALIA.py``), for a labeled batch (x, y) and an
unlabeled batch u_w of the same size B:

    P = softmax(g(u_w)),  ŷ = argmax_c P,  q = max_c P       EMA teacher g, eval mode, no gradient
    ρ_b = (1/HW) Σ_p (1 − H(P_p)/log C) · q_p,   H(P) = −Σ_c P_c log(P_c + 1e-10)   per image b
    u_s = A_k(u_w)      k ~ U{1, 2, 3} ops drawn with replacement from 11 intensity ops, in order
    π ~ a random permutation of 1..B;  λ_l ~ Beta(8, 2), λ_u ~ Beta(4, 4), once per batch
    L_i, M_i = boxes of side √(1 − λ)·S (λ_l, λ_u), centre uniform in [⌊S/8⌋, S), clipped
    ũ_i = L_i ⊙ x_π(i) + (1 − L_i) ⊙ u_s,i   if U_i > ρ_i (w.p. 1 − ρ_i), else u_s,i
          (targets y_π(i) with 255 kept, confidence 1)
    ū_j = M_j ⊙ ũ_π(j) + (1 − M_j) ⊙ u_s,j                      ŷ and q mixed alike
    L_u = (1/BHW) Σ_{b,p} 1[q̄ ≥ τ ∧ ȳ ≠ 255] · CE(f(ū), ȳ)      all pixels in the count
    L = L_sup + λ_u · L_u;   θ_g ← d·θ_g + (1 − d)·θ_f,  d = 0 in epoch 0, then min(1 − 1/(i + 1), d₀)

The injection depends on the confidence of the **source** image π(j) of each mixed pixel, not on
that of j. This plugin answers ``plan_views`` (one view "strong", coefficient 1) and
``schedule_augmentation`` with the intensity ops as ``photometric`` and the CutMix as two
sequential mixes that give exactly ū (``ssseg.augment.augseg_ops.label_injecting_mixes``):
u_j takes u_s,π(j) inside M_j, then the labeled x_π(π(j)) inside M_j ∩ L_π(j) where π(j) fires.
With ``unsup: {normalize: pixels}`` the core sums weight·CE over every pixel (so the unlabeled
crops' padding counts, as released) except the pasted ground truth marked 255 (ȳ = 255 in the
released loss: ``Pseudo.ignored``). The rest comes from other parts of a recipe: τ from ``confidence_threshold`` (0.95 on VOC; none on
Cityscapes), the 1/BHW from ``unsup: {normalize: pixels}``, λ_u from ``unsup.weight``, the teacher
from ``mean_teacher: {decay: d₀, warmup_epochs: 1}``, OHEM from ``ohem``.
"""

from __future__ import annotations

import functools

import attrs
import torch

from ssseg.api import (AugmentationPlan, CutMix, Plugin, Pseudo, StepContext, UnlabeledBatch, UserError, View,
                       hookimpl, in_range)
from ssseg.augment import apply_plan
from ssseg.augment.augseg_ops import (AUGSEG_OPS, augseg_boxes, beta_integer, image_confidence,
                                      injection_fires, label_injecting_mixes, sample_augseg_plan)

STRONG = "strong"


def _beta_parameters(_config, attribute, value: tuple[int, int]) -> None:
    """Validator: two integers ≥ 1 (λ is drawn as an order statistic of uniforms)."""
    if len(value) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in value):
        err = ValueError(f"{list(value)!r}: valid: two integers ≥ 1, [a, b] of Beta(a, b)")
        err.ssseg_field = attribute.name
        raise err


class AugSeg(Plugin):
    """One strong view: random intensity ops, then the adaptive label-injecting CutMix."""

    name = "augseg"
    requires_hookspec = 6

    @attrs.frozen
    class Config:
        """``num_augs``: the most intensity ops per image (released 3); ``random_num``: their count
        k ~ U{1..num_augs} (released ``flag_use_random_num_sampling: True``; false: always
        ``num_augs``). ``label_beta`` [a, b]: λ_l ~ Beta(a, b) of the labeled-patch boxes
        (released [8, 2], area 1 − λ, mean 0.2); ``mix_beta``: λ_u of the mixing boxes (released
        [4, 4]). ``cutmix``: the adaptive label-injecting CutMix at all (released
        ``use_cutmix: True``; false: the intensity view alone)."""

        num_augs: int = attrs.field(default=3, validator=in_range(1, len(AUGSEG_OPS)))
        random_num: bool = True
        label_beta: tuple[int, int] = attrs.field(default=(8, 2), converter=tuple, validator=_beta_parameters)
        mix_beta: tuple[int, int] = attrs.field(default=(4, 4), converter=tuple, validator=_beta_parameters)
        cutmix: bool = True

    @hookimpl
    def validate(self, recipe, pseudo_label_source: str) -> None:
        """Refuse what the released step cannot do: unequal labeled and unlabeled batches (image i
        takes labeled image π(π(i))), and no teacher pseudo-labels (ρ needs P)."""
        key = f"plugins.{self.recipe_key or self.name}"
        if self.config.cutmix and recipe.data.batch_labeled != recipe.data.batch_unlabeled:
            raise UserError(f"{key}: injects labeled image π(i) into unlabeled image i, so it needs "
                            f"data.batch_labeled == data.batch_unlabeled (got {recipe.data.batch_labeled} "
                            f"and {recipe.data.batch_unlabeled}; the released code asserts it)")
        if pseudo_label_source == "none":
            raise UserError(f"{key}: needs the teacher's softmax P for ŷ and ρ, but the pseudo-label "
                            "source is 'none' (a co-training plugin such as cps makes its own targets): "
                            "remove one of them")

    @hookimpl
    def plan_views(self) -> list[View]:
        """ū, with loss coefficient 1."""
        return [View(STRONG, coef=1.0)]

    @hookimpl
    def schedule_augmentation(self, ctx: StepContext, unlabeled: UnlabeledBatch, pseudo: Pseudo) -> AugmentationPlan:
        """u_s = A_k(u_w) per image, then (``cutmix``) the two mixes that give ū."""
        c = self.config
        b = unlabeled.image.shape[0]
        plan = sample_augseg_plan(b, ctx.generator, c.num_augs, c.random_num)
        photometric = functools.partial(apply_plan, plan=plan)
        if not c.cutmix:
            return AugmentationPlan(photometric=photometric)
        (mix_box, partner), (inject_box, labeled_partner) = self.mixes(ctx, pseudo, tuple(unlabeled.image.shape[-2:]))
        return AugmentationPlan(photometric=photometric,
                                mixes=(CutMix(mix_box, partner, donor="view"),
                                       CutMix(inject_box, labeled_partner, donor="labeled")))

    def mixes(self, ctx: StepContext, pseudo: Pseudo, size: tuple[int, int]):
        """ρ from the teacher's P; π, λ_l, λ_u, the boxes L and M, and the injection draws
        U_i > ρ_i, all from ``ctx.generator``; returns ((M, π), (M ∩ L_π fired, π∘π))."""
        rho = image_confidence(pseudo.probs)
        b, g = rho.shape[0], ctx.generator
        partner = torch.randperm(b, generator=g, device=g.device)
        lam_l, lam_u = beta_integer(*self.config.label_beta, g), beta_integer(*self.config.mix_beta, g)
        label_box, mix_box = augseg_boxes(b, size, lam_l, g), augseg_boxes(b, size, lam_u, g)
        fires = injection_fires(rho, g)
        ctx.log("augseg/rho", rho.mean())
        ctx.log("augseg/injected", fires.float().mean())
        device = ctx.device
        return label_injecting_mixes(mix_box.to(device), label_box.to(device), partner.to(device), fires.to(device))
