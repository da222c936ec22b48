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

from ssseg.api import Plugin, StepContext, hookimpl, in_range


class OHEM(Plugin):
    """Answers ``supervised_loss`` with the OHEM cross-entropy."""

    name = "ohem"

    @attrs.frozen
    class Config:
        """``thresh`` θ on the ground-truth probability; ``min_kept`` m pixels kept at least."""

        thresh: float = attrs.field(default=0.7, validator=in_range(0, 1))
        min_kept: int = attrs.field(default=100_000, validator=in_range(0))

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
