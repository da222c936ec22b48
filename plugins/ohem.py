"""Online hard example mining for the supervised loss (the ``ProbOhemCrossEntropy2d`` of the
FixMatch/UniMatch code, used on Cityscapes).

With p_i the softmax probability of pixel i's ground-truth class and N the labeled pixels
(ground truth ≠ ignore), the loss keeps the hard pixels

    K = {i : p_i ≤ max(θ, p_(m))}            θ = ``thresh``, p_(m) the m-th smallest p_i, m = ``min_kept``

and averages their cross-entropy: L_x = Σ_{i∈K} CE_i / |K|. So at least m pixels are kept, and
every pixel with p_i ≤ θ. When N < m every labeled pixel is kept (as the reference does).
m counts pixels of one process's batch: the reference uses 200,000 for 2 images of 801².
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from ssseg.api import Plugin, StepContext, UserError, hookimpl, in_range

RELEASED_SHARE = 200_000 / (2 * 801 * 801)  # m over a batch's pixels in the reference: 2 crops of 801²


class OHEM(Plugin):
    """Answers ``supervised_loss`` with the OHEM cross-entropy."""

    name = "ohem"

    @attrs.frozen
    class Config:
        """``thresh`` θ on the ground-truth probability; ``min_kept`` m pixels kept at least."""

        thresh: float = attrs.field(default=0.7, validator=in_range(0, 1))
        min_kept: int = attrs.field(default=100_000, validator=in_range(0))

    @hookimpl
    def validate(self, recipe) -> None:
        """Refuse an m that keeps every pixel of a labeled batch (plain cross-entropy), suggesting
        the reference's share of the batch's pixels."""
        pixels = recipe.data.batch_labeled * recipe.data.crop ** 2
        if self.config.min_kept >= pixels:
            key = self.recipe_key or self.name
            raise UserError(f"plugins.{key}.min_kept: {self.config.min_kept} is at least the {pixels} pixels of a "
                            f"labeled batch (data.batch_labeled {recipe.data.batch_labeled} × data.crop "
                            f"{recipe.data.crop}²), so OHEM would keep every pixel: plain cross-entropy. Set "
                            f"plugins.{key}.min_kept below it, e.g. {round(RELEASED_SHARE * pixels)} (the reference's "
                            f"share, 200,000 of 2 × 801² pixels), or remove {key}")

    def kept(self, logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
        """The mask of K ``[B,H,W]``."""
        labeled = target != ignore_index
        with torch.no_grad():
            p = logits.softmax(1).gather(1, target.masked_fill(~labeled, 0).unsqueeze(1)).squeeze(1)
            # unlabeled pixels sort last, so with fewer than m labeled pixels p_(m) = 1 keeps them all
            p = p.masked_fill(~labeled, 1.0)
            bound = torch.tensor(self.config.thresh, device=p.device, dtype=p.dtype)
            m = min(self.config.min_kept, p.numel())
            if m > 0:
                bound = torch.maximum(bound, p.flatten().kthvalue(m).values)  # max(θ, p_(m))
        return labeled & (p <= bound)

    @hookimpl
    def supervised_loss(self, ctx: StepContext, logits: Tensor, target: Tensor) -> Tensor:
        """L_x = Σ_{i∈K} CE_i / |K|."""
        keep = self.kept(logits, target, ctx.ignore_index)
        ce = F.cross_entropy(logits, target.masked_fill(~keep, 0), reduction="none")
        return (ce * keep).sum() / keep.sum().clamp_min(1)
