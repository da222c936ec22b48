"""Confidence thresholding (FixMatch, Sohn et al. 2020): a pseudo-labelled pixel counts only where
the teacher is confident,

    w_p = 1[max_c p_c(x_w)_p ≥ τ]          τ = ``threshold``

The core divides the view loss by the valid pixels, not by the confident ones, as the reference
code does. τ = 0.95 on VOC and COCO, 0 on Cityscapes (every pixel counts).
"""

from __future__ import annotations

import attrs
from torch import Tensor

from ssseg.api import Plugin, Pseudo, StepContext, View, hookimpl, in_range


class ConfidenceThreshold(Plugin):
    """Answers ``weight_loss`` with the per-pixel mask 1[conf ≥ τ]."""

    name = "confidence_threshold"

    @attrs.frozen
    class Config:
        """``threshold`` τ on the teacher's max-softmax confidence."""

        threshold: float = attrs.field(default=0.95, validator=in_range(0, 1))

    @hookimpl
    def weight_loss(self, ctx: StepContext, view: View, pseudo: Pseudo) -> Tensor:
        """1[conf ≥ τ] ``[B,H,W]``; logs the confident share of the valid pixels."""
        return confident_mask(ctx, view, pseudo, self.config.threshold)


def confident_mask(ctx: StepContext, view: View, pseudo: Pseudo, tau: float | Tensor) -> Tensor:
    """1[conf ≥ τ] ``[B,H,W]``, logging its share of the view's valid pixels as
    ``mask_ratio/<view>``."""
    mask = (pseudo.conf >= tau).float()
    valid = pseudo.valid.float()
    ctx.log(f"mask_ratio/{view.name}", (mask * valid).sum() / valid.sum().clamp_min(1))
    return mask
