"""The classic mean teacher's consistency cost (Tarvainen & Valpola, 2017), as in TorchSemiSeg.

Student f(·; θ) and teacher f(·; θ') see the same weak unlabeled batch x (the teacher in eval
mode: its logits are the core's pseudo-label logits); the cost is the squared distance between
their softmax outputs σ, averaged over valid pixels p and classes C:

    J = w · Σ_p valid_p · ‖σ(f(x; θ))_p − σ(f(x; θ'))_p‖² / (C · Σ_p valid_p)       w = ``weight``

with the usual sigmoid ramp-up of the weight over the first T = ``rampup_iters`` iterations
(Tarvainen & Valpola, after Laine & Aila): w(t) = ``weight`` · exp(−5 (1 − min(t/T, 1))²); T = 0
means no ramp-up. J is added as the extra loss ``consistency`` (λ_u does not scale it; no threshold).
The student sees x in its training forward because this plugin asks for it
(``FeatureRequest(student_on_weak=True)``: ``outputs.weak``); it plans no view, so it composes
with any view planner. Compose it with ``mean_teacher: {decay: 0.99}``.
"""

from __future__ import annotations

import math

import attrs

from ssseg.api import (FeatureRequest, Plugin, Pseudo, StepContext, StudentOutputs, UnlabeledBatch, UserError,
                       hookimpl, in_range)


class MSEConsistency(Plugin):
    """Softmax mean-squared-error consistency between student and teacher on the weak view."""

    name = "mse_consistency"

    @attrs.frozen
    class Config:
        """``weight`` w of the consistency cost; ``rampup_iters`` T of its sigmoid ramp-up."""

        weight: float = attrs.field(default=100.0, validator=in_range(0))
        rampup_iters: int = attrs.field(default=0, validator=in_range(0))

    def weight_at(self, iteration: int) -> float:
        """w(t) = weight · exp(−5 (1 − min(t/T, 1))²), or ``weight`` when T = 0."""
        if self.config.rampup_iters == 0:
            return self.config.weight
        phase = 1.0 - min(iteration / self.config.rampup_iters, 1.0)
        return self.config.weight * math.exp(-5.0 * phase * phase)

    @hookimpl
    def validate(self, recipe, pseudo_label_source: str) -> None:
        """J needs an unlabeled batch and the teacher's predictions of it."""
        key = f"plugins.{self.recipe_key or self.name}"
        if not recipe.data.batch_unlabeled:
            raise UserError(f"{key}: J compares student and teacher on the unlabeled batch, and this recipe "
                            "has none (data.batch_unlabeled: 0): set data.batch_unlabeled or remove "
                            f"{self.recipe_key or self.name}")
        if pseudo_label_source == "none":
            raise UserError(f"{key}: J needs the teacher's predictions, and the recipe's pseudo-label source "
                            f"is 'none': remove {self.recipe_key or self.name} or the plugin that decides "
                            "the source")

    @hookimpl
    def request_features(self) -> FeatureRequest:
        """The student sees the weak batch x unchanged in its training forward."""
        return FeatureRequest(student_on_weak=True)

    @hookimpl
    def extra_losses(self, ctx: StepContext, unlabeled: UnlabeledBatch | None, pseudo: Pseudo | None,
                     outputs: StudentOutputs) -> dict | None:
        """J = w · mean over valid pixels and classes of (σ(student) − σ(teacher))²."""
        if pseudo is None:
            return None
        student = outputs.weak.softmax(1)
        teacher = pseudo.logits.softmax(1)
        valid = pseudo.valid.to(student.dtype)
        squared = ((student - teacher) ** 2).sum(1)
        j = (squared * valid).sum() / (valid.sum().clamp_min(1) * student.shape[1])
        return {"consistency": self.weight_at(ctx.iteration) * j}
