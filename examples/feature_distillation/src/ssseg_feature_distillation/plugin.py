"""Feature distillation from a mean teacher: the student's decoder features on the weak images,
through a trainable 1×1 projection head g, follow the teacher's decoder features.

    z^s = g(d^s(x_w))            d^s: the student's decoder output on the weak batch
    z^t = d^t(x_w)               d^t: the teacher's decoder output in its pseudo-labelling forward
    L_fd = (1/|Ω|) Σ_p ‖ z^s_p/‖z^s_p‖ − z^t_p/‖z^t_p‖ ‖²         (= 2 − 2 cos(z^s_p, z^t_p))
    L = w_x L_x + λ_u (L_u + β L_fd)                                   β = ``beta``

It uses hook spec 5 through ``ssseg.api`` alone: ``build_modules`` for g (the core trains,
clips, DDP-wraps and checkpoints it), ``request_features`` for d^s and d^t (and for x_w in the
student's training forward), and a λ_u-scaled ``LossTerm``. It plans no views, so it composes
with ``mean_teacher`` and any view planner for L_u (``fixmatch`` here).
"""

from __future__ import annotations

import attrs
import torch.nn.functional as F
from torch import Tensor, nn

from ssseg.api import BuildContext, FeatureRequest, LossTerm, Plugin, hookimpl, positive

HEAD = "fd_head"


def distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """L_fd: the mean over pixels of the squared distance between unit feature vectors."""
    return (F.normalize(student, dim=1) - F.normalize(teacher, dim=1)).pow(2).sum(1).mean()


class FeatureDistillation(Plugin):
    """Adds β·L_fd (scaled by λ_u) with a trainable projection head g."""

    name = "feature_distillation"
    requires_hookspec = 5
    requires = {"build_teacher": "mean_teacher"}  # d^t comes from a separate teacher

    @attrs.frozen
    class Config:
        """``beta`` β, the weight of L_fd inside the unsupervised loss."""

        beta: float = attrs.field(default=1.0, validator=positive)

    @hookimpl
    def build_modules(self, build: BuildContext) -> dict[str, nn.Module]:
        """g: a 1×1 convolution D → D on the decoder output (D from the student)."""
        channels = build.student.feature_geometry()["decoder"]
        return {HEAD: nn.Conv2d(channels, channels, 1)}

    @hookimpl
    def request_features(self) -> FeatureRequest:
        """d^s from the student's training forward of x_w, d^t from the teacher's."""
        return FeatureRequest(student=("decoder",), teacher=("decoder",), student_on_weak=True)

    @hookimpl
    def extra_losses(self, ctx, pseudo, outputs) -> dict[str, LossTerm]:
        """β·L_fd(g(d^s(x_w)), d^t(x_w)), multiplied by λ_u."""
        z_s = ctx.modules[HEAD](outputs.features["weak"].decoder)
        z_t = pseudo.features.decoder
        return {"fd": LossTerm(self.config.beta * distillation_loss(z_s, z_t), times_lambda_u=True)}
