"""CutMix-Seg (French et al., BMVC 2020): mean-teacher consistency on CutMixed unlabeled images,
with soft targets mixed from the teacher's predictions of the two source images.

With u_a the weak unlabeled batch, u_b = u_a[π] a partner batch, and M ∈ {0,1}^{B×H×W} one box per
image of area fraction exactly 0.5 (M = 1 inside: the box shows u_b):

    u_mix = u_a ⊙ (1 − M) + u_b ⊙ M,            v_mix = v_a ⊙ (1 − M) + v_b ⊙ M
    P^t   = softmax(g(u_a) ⊙ (1 − M) + g(u_b) ⊙ M)   teacher g, no gradient, the un-mixed images
    P^s   = softmax(f(u_mix))                        student f
    q     = (1 / BHW) Σ_{b,p} 1[max_c P^t_{b,p,c} ≥ τ]             one scalar per batch
    L_cons = (1 / BHW) Σ_{b,p} v_mix · q · Σ_c (P^s_c − P^t_c)²
    L = L_sup + λ_u · L_cons                                       λ_u = ``unsup.weight`` (1.0)

The teacher is the EMA of the student (``mean_teacher`` with α = 0.99 and ``ramp_up: false``:
φ ← 0.99 φ + 0.01 θ from the first step, over parameters and BatchNorm statistics, as released).
The core labels u_a with the eval-mode teacher and mixes the teacher's logits with the plan
(``view_input.pseudo.probs`` are P^t); since M is binary, mixing logits equals mixing the two
forwards' logits. The box: height fraction 0.5^v, v ~ U(0, 1), width fraction 0.5 / height
fraction, sizes rounded, top-left uniform inside the crop.

Differences from the released code: u_b is the weak batch permuted by a random cyclic shift (never
an image with itself) instead of a second, independently shuffled loader; the released teacher
runs in train mode, which equals eval mode for its DeepLab v2 with frozen BatchNorm and no dropout
(for DeepLab v3+, whose head BN and ASPP dropout are live in the released teacher, ssseg's
teacher is in eval mode); ``conf_per_pixel: true`` is the released per-pixel option (off).
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from ssseg.api import (AugmentationPlan, LossTerm, Plugin, StepContext, UnlabeledBatch, View, ViewInput,
                       hookimpl, in_range)
from ssseg.augment import box_masks

MIX = "mix"


def half_area_boxes(batch_size: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """One box per image ``[B,H,W]`` of area fraction 0.5: height fraction 0.5^v, v ~ U(0, 1),
    width fraction 0.5 / height fraction, rounded sizes, top-left uniform inside the crop."""
    h, w = size
    v = torch.rand(batch_size, generator=generator, device=generator.device, dtype=torch.float64)
    height = torch.round(0.5 ** v * h).long()
    width = torch.round(0.5 / 0.5 ** v * w).long().clamp_max(w)
    top = (torch.rand(batch_size, generator=generator, device=generator.device, dtype=torch.float64)
           * (h - height + 1)).long()
    left = (torch.rand(batch_size, generator=generator, device=generator.device, dtype=torch.float64)
            * (w - width + 1)).long()
    return box_masks(top, left, height, width, size)


class CutMixSeg(Plugin):
    """Plans the CutMixed view (coefficient 0: no cross-entropy) and adds λ_u·L_cons."""

    name = "cutmix_seg"

    @attrs.frozen
    class Config:
        """``threshold`` τ of the confident proportion q; ``conf_per_pixel``: weight each pixel by
        1[max P^t ≥ τ] instead of the batch proportion q."""

        threshold: float = attrs.field(default=0.97, validator=in_range(0, 1))
        conf_per_pixel: bool = False

    @hookimpl
    def plan_views(self, ctx: StepContext, hardness: Tensor | None) -> list[View]:
        """u_mix, trained by L_cons only."""
        return [View(MIX, coef=0.0)]

    @hookimpl
    def schedule_augmentation(self, ctx: StepContext, view: View, unlabeled: UnlabeledBatch) -> AugmentationPlan:
        """M (one half-area box per image) and π (a random cyclic shift of the batch)."""
        b, _, h, w = unlabeled.image.shape
        shift = int(torch.randint(1, max(b, 2), (), generator=ctx.generator)) if b > 1 else 0
        partner = (torch.arange(b) + shift) % b
        box = half_area_boxes(b, (h, w), ctx.generator)
        return AugmentationPlan(cutmix_box=box.to(ctx.device), cutmix_partner=partner.to(ctx.device))

    @hookimpl
    def extra_losses(self, views: dict[str, ViewInput], outputs) -> dict[str, LossTerm]:
        """L_cons = (1/BHW) Σ v_mix · q · Σ_c (P^s_c − P^t_c)², multiplied by λ_u."""
        mixed = views[MIX].pseudo
        p_t = mixed.probs
        p_s = outputs.views[MIX].softmax(1)
        confident = (p_t.max(1).values >= self.config.threshold).float()
        q = confident if self.config.conf_per_pixel else confident.mean()
        squared = ((p_s - p_t) ** 2).sum(1)
        return {"cutmix_seg/cons": LossTerm((mixed.valid.float() * q * squared).mean(), times_lambda_u=True)}
