"""UniMatch V1 (Yang et al., CVPR 2023): FixMatch with two strong views and a feature-level view.

    x_s1, x_s2 = two FixMatch strong views (independent A_s draws and CutMix boxes, same mix batch)
    p_fp       = g(Dropout2d_0.5(h(x_w)))      h the encoder, g the decoder; target: un-mixed ŷ, conf
    L_u = 0.25·L_s1 + 0.25·L_s2 + 0.5·L_fp,     L = (L_x + L_u) / 2

with every L_v the thresholded cross-entropy of FixMatch (``confidence_threshold``); the halves
come from ``unsup: {weight: 0.5, supervised_weight: 0.5}``. The core runs the encoder once on the
weak batch for both the weak logits and the dropped-out features.
"""

from __future__ import annotations

import attrs

from ssseg.api import View, hookimpl, in_range
from ssseg_plugins.fixmatch import FixMatch


class UniMatch(FixMatch):
    """Views s1, s2 (image, 0.25 each) and fp (feature dropout, 0.5)."""

    name = "unimatch"

    @attrs.frozen
    class Config(FixMatch.Config):
        """FixMatch's probabilities, and the Dropout2d probability of the fp view."""

        fp_dropout: float = attrs.field(default=0.5, validator=in_range(0, 1, hi_open=True))

    @hookimpl
    def plan_views(self) -> list[View]:
        """s1, s2 (0.25 each) and fp (0.5)."""
        return [View("s1", coef=0.25), View("s2", coef=0.25),
                View("fp", coef=0.5, kind="feature", dropout=self.config.fp_dropout)]
