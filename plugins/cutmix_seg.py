"""CutMix-Seg (French et al., BMVC 2020): mean-teacher consistency on CutMixed unlabeled images,
with soft targets mixed from the teacher's predictions of the two source images.

With u_a the weak unlabeled batch, u_b = u_a[π] a partner batch, and M ∈ {0,1}^{B×H×W} one box per
image of area fraction exactly 0.5 (M = 1 inside: the box shows u_b):

    u_mix = u_a ⊙ (1 − M) + u_b ⊙ M,            v_mix = v_a ⊙ (1 − M) + v_b ⊙ M
    P^t   = softmax(g(u_a) ⊙ (1 − M) + g(u_b) ⊙ M)   teacher g, no gradient, the un-mixed images
    P^s   = softmax(f(u_mix))                        student f
    q     = (1 / BHW) Σ_{b,p} 1[max_c P^t_{b,p,c} ≥ τ]             one scalar per batch
    L_cons = (1 / BHW) Σ_{b,p} v_mix · q · Σ_c (P^s_c − P^t_c)²
    L = L_sup + λ_u · r_e · L_cons                                 λ_u = ``unsup.weight`` (1.0)

r_e = 1 (every released run), or with ``rampup_epochs`` R the sigmoid ramp-up
r_e = exp(−5 (1 − min(e, R)/R)²) of epoch e (the released ``--rampup``, meant for τ = 0).

The teacher is the EMA of the student (``mean_teacher`` with α = 0.99 and ``ramp_up: false``:
φ ← 0.99 φ + 0.01 θ from the first step, over parameters and BatchNorm statistics, as released).
The core labels u_a with the eval-mode teacher and mixes the teacher's logits with the plan
(``view_input.pseudo.probs`` are P^t); since M is binary, mixing logits equals mixing the two
forwards' logits. The box (released ``mask_gen.py``): height fraction 0.5^v, v ~ U(0, 1), width
fraction 0.5 / height fraction, sizes round(fraction · side), top-left corner round((side − size)·t),
t ~ U(0, 1) per axis, so the box lies inside the crop and the corners 0 and side − size have half
the probability of the others (``corners: uniform``: ⌊(side − size + 1)·t⌋, every position alike,
the rule before this option; at crop 321 the corner's distribution given the box size is at total
variation 0.019 from the released one, its marginal 0.011, per axis).
``colour: true`` gives the student's view the colour augmentation of the later run scripts
(``--aug_strong_colour``: ColorJitter(0.4, 0.4, 0.4, 0.1) with probability 0.8, then greyscale with
probability 0.2, per image); the teacher still sees the plain images and the validity is theirs.

Differences from the released code: u_b is the weak batch permuted by a random cyclic shift (never
an image with itself) instead of a second, independently shuffled loader; the released teacher
runs in train mode, which equals eval mode for its DeepLab v2 with frozen BatchNorm and no dropout
(for DeepLab v3+, whose head BN and ASPP dropout are live in the released teacher, ssseg's
teacher is in eval mode); the student runs one forward on cat(x, u_mix) (BatchNorm statistics over
both), the released code one on x and one on u_mix; an epoch of ``rampup_epochs`` is ssseg's (one
pass over the unlabeled list), the released one 1,000 iterations. ``conf_per_pixel: true`` is the
released per-pixel option (off).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import attrs
import torch
from torch import Tensor

from ssseg.api import (AugmentationPlan, CutMix, LossTerm, Plugin, StepContext, UnlabeledBatch, View, ViewInput,
                       hookimpl, in_range)
from ssseg.augment import box_masks
from ssseg.augment.photometric import apply_plan, sample_fixmatch_plan

MIX = "mix"


def half_area_boxes(batch_size: int, size: tuple[int, int], generator: torch.Generator,
                    corners: Literal["released", "uniform"] = "released") -> Tensor:
    """One box per image ``[B,H,W]`` of area fraction 0.5: height fraction 0.5^v, v ~ U(0, 1),
    width fraction 0.5 / height fraction, rounded sizes; the top-left corner inside the crop,
    round((side − size)·t) per axis with t ~ U(0, 1) (``released``, numpy's half-to-even rounding)
    or ⌊(side − size + 1)·t⌋ (``uniform``)."""
    h, w = size

    def uniform() -> Tensor:
        return torch.rand(batch_size, generator=generator, device=generator.device, dtype=torch.float64)

    v = uniform()
    height = torch.round(0.5 ** v * h).long()
    width = torch.round(0.5 / 0.5 ** v * w).long().clamp_max(w)
    if corners == "released":
        top, left = torch.round((h - height) * uniform()).long(), torch.round((w - width) * uniform()).long()
    else:
        top, left = ((h - height + 1) * uniform()).long(), ((w - width + 1) * uniform()).long()
    return box_masks(top, left, height, width, size)


def sigmoid_rampup(epoch: int, length: int) -> float:
    """r_e = exp(−5 (1 − min(e, R)/R)²) for R = ``length`` > 0; 1 when R = 0."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(epoch, 0), length) / length
    return math.exp(-5.0 * phase * phase)


class CutMixSeg(Plugin):
    """Plans the CutMixed view (coefficient 0: no cross-entropy) and adds λ_u·L_cons."""

    name = "cutmix_seg"

    @attrs.frozen
    class Config:
        """``threshold`` τ of the confident proportion q; ``conf_per_pixel``: weight each pixel by
        1[max P^t ≥ τ] instead of the batch proportion q; ``corners``: the box corner rule
        (``released`` or ``uniform``); ``rampup_epochs`` R of the sigmoid ramp-up (0: none, as
        released); ``colour``: the student's colour augmentation (module doc)."""

        threshold: float = attrs.field(default=0.97, validator=in_range(0, 1))
        conf_per_pixel: bool = False
        corners: Literal["released", "uniform"] = "released"
        rampup_epochs: int = attrs.field(default=0, validator=in_range(0))
        colour: bool = False

    @hookimpl
    def plan_views(self) -> list[View]:
        """u_mix, trained by L_cons only."""
        return [View(MIX, coef=0.0)]

    @hookimpl
    def schedule_augmentation(self, ctx: StepContext, view: View, unlabeled: UnlabeledBatch) -> AugmentationPlan:
        """M (one half-area box per image) and π (a random cyclic shift of the batch); with
        ``colour``, the student's colour jitter and greyscale per image."""
        c = self.config
        b, _, h, w = unlabeled.image.shape
        shift = int(torch.randint(1, max(b, 2), (), generator=ctx.generator)) if b > 1 else 0
        partner = (torch.arange(b) + shift) % b
        box = half_area_boxes(b, (h, w), ctx.generator, c.corners)
        photometric = None
        if c.colour:
            plan = sample_fixmatch_plan(b, ctx.generator, jitter=(0.4, 0.4, 0.4, 0.1), p_jitter=0.8, p_gray=0.2,
                                        p_blur=0.0)
            photometric = functools.partial(apply_plan, plan=plan)
        return AugmentationPlan(photometric=photometric, mixes=(CutMix(box.to(ctx.device), partner.to(ctx.device)),))

    @hookimpl
    def extra_losses(self, ctx: StepContext, views: dict[str, ViewInput], outputs) -> dict[str, LossTerm]:
        """r_e · L_cons, L_cons = (1/BHW) Σ v_mix · q · Σ_c (P^s_c − P^t_c)², multiplied by λ_u."""
        mixed = views[MIX].pseudo
        p_t = mixed.probs
        p_s = outputs.views[MIX].softmax(1)
        confident = (p_t.max(1).values >= self.config.threshold).float()
        q = confident if self.config.conf_per_pixel else confident.mean()
        squared = ((p_s - p_t) ** 2).sum(1)
        loss = (mixed.valid.float() * q * squared * views[MIX].weight).mean()
        if self.config.rampup_epochs:
            ramp = sigmoid_rampup(ctx.epoch, self.config.rampup_epochs)
            ctx.log("cutmix_seg/rampup", ramp)
            loss = loss * ramp
        return {"cutmix_seg/cons": LossTerm(loss, times_lambda_u=True)}
