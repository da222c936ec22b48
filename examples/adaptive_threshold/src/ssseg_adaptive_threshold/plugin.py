"""Self-adaptive class-wise confidence thresholds for pseudo-labelled pixels.

Wang et al., "FreeMatch: Self-adaptive Thresholding for Semi-supervised Learning", ICLR 2023,
self-adaptive thresholding (SAT). With q_b the teacher's softmax on the weak view of unlabeled
sample b, μB unlabeled samples per batch, C classes and λ the EMA decay, after every batch:

    τ_t    = λ τ_{t−1} + (1 − λ) (1/μB) Σ_b max(q_b)              self-adaptive global threshold
    p̃_t(c) = λ p̃_{t−1}(c) + (1 − λ) (1/μB) Σ_b q_b(c)             self-adaptive local threshold
    τ_t(c) = MaxNorm(p̃_t(c)) · τ_t = p̃_t(c) / max_c' p̃_t(c') · τ_t
    L_u    = (1/μB) Σ_b 1[max(q_b) ≥ τ_t(argmax(q_b))] · H(q̂_b, Q_b)   (the paper writes >)

with τ_0 = p̃_0(c) = 1/C and λ = 0.999 in the paper. τ follows the model's overall confidence (low
early, so more pixels count; high later), and a class the model is unsure of gets a lower threshold.

Adapted to segmentation: b runs over the valid pixels of the batch, so the means are over pixels.
Under DDP the sums Σ max(q_b), Σ q_b(c) and the pixel count are all-reduced with
``all_reduce_sum_``, so every rank holds the same statistics: the mean over all ranks' pixels.
This plugin updates the statistics in ``after_pseudo_label`` (the teacher's probabilities q on the
weak batch, before any loss) and answers ``weight_loss`` with the mask 1[conf ≥ τ_t(ŷ)] (the core's
view loss is the masked cross-entropy H over the valid pixels), so step t uses τ_t as in the paper.
FreeMatch's self-adaptive fairness loss is not included.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor, nn

from ssseg.api import (Plugin, Pseudo, Run, StepContext, UnlabeledBatch, View, all_reduce_sum_,
                       hookimpl, in_range)


class SelfAdaptiveThresholds(nn.Module):
    """τ (global) and p̃ ``[C]`` (local) as buffers, so they follow the device and the checkpoint."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.register_buffer("tau", torch.tensor(1.0 / num_classes))                    # τ_0 = 1/C
        self.register_buffer("p_tilde", torch.full((num_classes,), 1.0 / num_classes))  # p̃_0(c) = 1/C

    def thresholds(self) -> Tensor:
        """τ(c) = p̃(c) / max_c' p̃(c') · τ, ``[C]``."""
        return self.p_tilde / self.p_tilde.max() * self.tau

    @torch.no_grad()
    def update(self, probs: Tensor, valid: Tensor, decay: float) -> None:
        """One EMA step of τ and p̃ from probabilities ``[B,C,H,W]`` over the ``valid`` ``[B,H,W]``
        pixels of every rank (a batch without valid pixels changes nothing)."""
        v = valid.unsqueeze(1).to(probs.dtype)
        sums = torch.cat([(probs.amax(1, keepdim=True) * v).sum().view(1),   # Σ_b max(q_b)
                          (probs * v).sum((0, 2, 3)),                         # Σ_b q_b(c)
                          v.sum().view(1)])                                   # μB (pixels)
        all_reduce_sum_(sums)
        count = sums[-1]
        means = sums[:-1] / count.clamp_min(1)
        weight = torch.where(count > 0, 1.0 - decay, 0.0)                     # 1 − λ
        self.tau.lerp_(means[0], weight)
        self.p_tilde.lerp_(means[1:], weight)


class AdaptiveThreshold(Plugin):
    """Answers ``weight_loss`` with 1[conf ≥ τ(ŷ)] per pixel, τ(c) self-adaptive (FreeMatch SAT)."""

    name = "adaptive_threshold"
    requires_hookspec = 2  # after_pseudo_label

    @attrs.frozen
    class Config:
        """``decay`` λ of the EMAs of the confidence and of the class probabilities."""

        decay: float = attrs.field(default=0.999, validator=in_range(0, 1, hi_open=True))

    def __init__(self, config):
        super().__init__(config)
        self.stats: SelfAdaptiveThresholds | None = None

    @hookimpl
    def setup(self, run: Run) -> None:
        """τ_0 = p̃_0(c) = 1/C on the run's device."""
        self.stats = SelfAdaptiveThresholds(run.data.num_classes).to(run.device)

    @hookimpl
    def weight_loss(self, ctx: StepContext, view: View, pseudo: Pseudo, hardness: Tensor | None) -> Tensor:
        """1[conf ≥ τ(ŷ)] ``[B,H,W]``; logs the share of valid pixels that pass."""
        mask = (pseudo.conf >= self.stats.thresholds()[pseudo.labels]).float()
        valid = pseudo.valid.float()
        ctx.log(f"mask_ratio/{view.name}", (mask * valid).sum() / valid.sum().clamp_min(1))
        return mask

    @hookimpl
    def after_pseudo_label(self, ctx: StepContext, unlabeled: UnlabeledBatch, pseudo: Pseudo) -> None:
        """τ_t, p̃_t from τ_{t−1}, p̃_{t−1} and the teacher's probabilities q on the weak batch."""
        self.stats.update(pseudo.logits.softmax(1), pseudo.valid, self.config.decay)
        ctx.log("adaptive_threshold/tau", self.stats.tau)

    def state_dict(self) -> dict[str, Tensor]:
        """τ and p̃."""
        return self.stats.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore τ and p̃ (onto the run's device)."""
        self.stats.load_state_dict(state)
