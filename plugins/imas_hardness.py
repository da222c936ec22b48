"""iMAS §1: per-instance hardness from the class-weighted symmetric IoU (wsIoU) of student and teacher.

Zhao et al., "Instance-specific and Model-adaptive Supervision for Semi-supervised Semantic
Segmentation", CVPR 2023. With y^s, y^t the argmax maps and c^s, c^t the max-probability maps of the
student and the teacher on the same weak view (both in eval mode, no gradient), per image:

    IoU_k  = |{y^s=k} ∩ {y^t=k}| / |{y^s=k} ∪ {y^t=k}|          (0/0 counts as 0)
    w^t_k  = n^t_k / Σ_j n^t_j,  n^t_k = #{y^t=k}   (n_0 := 0 first with ignore_background; w^s likewise)
    wIoU_t = Σ_k w^t_k IoU_k,    wIoU_s = Σ_k w^s_k IoU_k
    ρ_t    = mean_p 1[c^t_p ≥ τ], ρ_s likewise
    e      = (ρ_t · wIoU_t + ρ_s · wIoU_s) / 2      (easiness);   γ = 1 − e  (hardness, returned)

Every pixel of the crop counts, padding included, as in the released code (its unlabeled loader
discards the padding mask). See docs/imas.md.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from ssseg.api import Plugin, Pseudo, StepContext, UnlabeledBatch, UserError, eval_mode, hookimpl, in_range


def easiness_of(hardness: Tensor | None, plugin: str) -> Tensor:
    """For plugins that use γ: e = 1 − γ ``[B]``, detached; an error when there is no γ."""
    if hardness is None:
        raise UserError(f"plugins.{plugin}: the hardness estimator returned no hardness this step")
    return (1 - hardness).detach()


def class_counts(labels: Tensor, num_classes: int) -> Tensor:
    """n_k per image: ``[B,C]`` pixel counts of each class in the maps ``labels`` ``[B,H,W]``."""
    b = labels.shape[0]
    offset = torch.arange(b, device=labels.device).view(-1, 1, 1) * num_classes
    return torch.bincount((labels + offset).flatten(), minlength=b * num_classes).view(b, num_classes)


def class_weights(counts: Tensor, ignore_background: bool) -> Tensor:
    """w_k = n_k / Σ_j n_j per image (n_0 := 0 first if ``ignore_background``; all-zero rows stay 0)."""
    if ignore_background:
        counts = torch.cat([torch.zeros_like(counts[:, :1]), counts[:, 1:]], dim=1)
    counts = counts.float()
    return counts / counts.sum(1, keepdim=True).clamp_min(1)


def wsiou_easiness(labels_s: Tensor, conf_s: Tensor, labels_t: Tensor, conf_t: Tensor, num_classes: int,
             threshold: float, ignore_background: bool = True) -> tuple[Tensor, Tensor]:
    """e ``[B]`` from student (s) and teacher (t) argmax/confidence maps ``[B,H,W]``; also ρ_t."""
    n_s, n_t = class_counts(labels_s, num_classes), class_counts(labels_t, num_classes)
    agree = torch.where(labels_s == labels_t, labels_t, num_classes)  # class num_classes = "disagree"
    n_st = class_counts(agree, num_classes + 1)[:, :num_classes]      # |{y^s=k} ∩ {y^t=k}|
    union = n_s + n_t - n_st
    iou = n_st.float() / union.clamp_min(1)                            # IoU_k, 0/0 → 0
    wiou_t = (class_weights(n_t, ignore_background) * iou).sum(1)
    wiou_s = (class_weights(n_s, ignore_background) * iou).sum(1)
    rho_t = (conf_t >= threshold).flatten(1).float().mean(1)
    rho_s = (conf_s >= threshold).flatten(1).float().mean(1)
    return (rho_t * wiou_t + rho_s * wiou_s) / 2, rho_t


class IMASHardness(Plugin):
    """Answers ``estimate_hardness`` with γ = 1 − e from the wsIoU of student and teacher."""

    name = "imas_hardness"
    # wsIoU compares the student with a distinct teacher: the student against itself gives e = 1
    requires = {"build_teacher": "mean_teacher"}

    @attrs.frozen
    class Config:
        """``threshold``: τ of the confident fractions ρ (use the pseudo-label threshold: 0.95 VOC,
        0.7 Cityscapes). ``ignore_background``: drop class 0 from the class weights (the released
        runs do so on VOC and Cityscapes alike, where class 0 is *road*)."""

        threshold: float = attrs.field(default=0.95, validator=in_range(0, 1))
        ignore_background: bool = True

    @hookimpl
    def estimate_hardness(self, ctx: StepContext, unlabeled: UnlabeledBatch, pseudo: Pseudo) -> Tensor:
        """γ ``[B]``: the student predicts the weak view in eval mode; the teacher's prediction is
        ``pseudo``. Logs the mean and std of γ and the teacher's mean confident fraction ρ_t."""
        with eval_mode(ctx.student), torch.no_grad():
            conf_s, labels_s = ctx.student(unlabeled.image).softmax(1).max(1)
        e, rho_t = wsiou_easiness(labels_s, conf_s, pseudo.labels, pseudo.conf, ctx.num_classes,
                            self.config.threshold, self.config.ignore_background)
        hardness = 1 - e
        ctx.log("imas/hardness_mean", hardness.mean())
        ctx.log("imas/hardness_std", hardness.std(unbiased=False))
        ctx.log("imas/confident_fraction_teacher", rho_t.mean())
        return hardness
