"""iMAS §2: hardness-weighted consistency loss (a curriculum: easy instances weigh more).

For a student output z_i on an unlabeled view, pseudo-label ŷ_i, confidence conf_i and easiness
e_i = 1 − γ_i:

    ℓ_i = (1 / (H·W)) · Σ_p 1[conf_ip ≥ τ] · CE(z_ip, ŷ_ip)
    L   = (1 / B) · Σ_i e_i · ℓ_i

This plugin contributes the factor e_i ``[B]`` (no gradient, not normalised by Σe); the threshold
1[conf ≥ τ] comes from ``confidence_threshold``, and the core's view loss is L exactly with
``unsup.normalize: pixels`` (Σ weight·CE / (B·H·W), padding included, as released), and with the
default Σ weight·valid·CE / Σ valid whenever no pixel is padding. On a CutMix view the weights index
the receiving image, so image i is weighted by its own e_i as the paper asks.
"""

from __future__ import annotations

import attrs
from torch import Tensor

from ssseg.api import Plugin, Pseudo, StepContext, View, hookimpl
from ssseg_plugins.imas_hardness import easiness_of


class IMASWeighting(Plugin):
    """Answers ``weight_loss`` with e_i = 1 − γ_i for every unlabeled view."""

    name = "imas_weighting"
    requires_hookspec = 5

    @attrs.frozen
    class Config:
        """No parameters."""

    requires = {"estimate_hardness": "imas_hardness"}  # γ comes from a hardness estimator

    @hookimpl
    def weight_loss(self, ctx: StepContext, view: View, pseudo: Pseudo, hardness: Tensor | None) -> Tensor:
        """e_i = 1 − γ_i ``[B]``, detached."""
        return easiness_of(hardness, self.recipe_key)
