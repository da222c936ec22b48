"""CorrMatch (Sun et al., CVPR 2024; released code BBBBchan/CorrMatch): UniMatch's strong view x_s
and feature-perturbed view, with pseudo-labels propagated through a learned correlation map and an
adaptive threshold. In the order of the released ``corrmatch.py``:

Correlation head on the encoder's deepest features F (c4), f = Dropout2d_0.1(ReLU(BN(conv3×3(F)))):

    K = W_k f,  Q = W_q f                          (1×1 convs to C channels, flattened to [C, hw])
    S = softmax_j(K_iᵀ Q_j / √C)                   [hw, hw] per image: the correlation map
    p̂ = up(p̃ S)                                   pixel propagation: p̃ the detached logits on the
                                                   feature grid, up() bilinear to the crop

Adaptive threshold, from the weak view's pseudo-labels ŷ_w, conf_w (valid as the mixed view's):

    τ ← m·τ + (1 − m)·mean_{c present} max_{p: ŷ_p = c} conf_p        m = 0.999, τ_0 = 0.85

Region propagation on x_s's pseudo-labels ŷ (the weak ŷ_w outside the CutMix box, the partner's
inside): M = 128 rows i of the weak view's S (pixels drawn at random), each upsampled to the crop,
min-max normalised and binarised, R_i = 1[> 0.5] outside the box and on valid pixels; in order,

    G_i = R_i ∧ 1[conf ≥ τ];   if |G_i| > 0, |G_i| / |R_i| ≥ τ and the most frequent class c* of
    ŷ on G_i has a share > τ:   ŷ[R_i] ← c*,   M_exp ← M_exp ∨ R_i

(later regions count the labels earlier ones wrote), M_exp starting as 1[conf ≥ τ] ∧ valid. The
losses, each CE averaged over the valid pixels as released:

    L_s  = ½ (CE(p_x, y) + CE(p̂_x, y))
    L_s1 = CE(p_s, ŷ)·M_exp            L_fp = CE(p_fp, ŷ_w)·1[conf_w ≥ τ]
    L_kl = KL(softmax(p_w) ‖ softmax(p_s))·1[conf ≥ τ]     (as released: the un-mixed weak
                                        prediction is the target inside the CutMix box too)
    L_corr = ½ (CE(p̂_s, ŷ)·M_exp + CE(p̂_w, ŷ_w)·1[conf_w ≥ τ])
    L_u  = ¼ (L_s1 + L_kl + L_fp + L_corr),        L = ½ (L_s + L_u)

In ssseg: the views s (``s1``, coefficient ¼) and ``fp`` (¼) are the core's view losses, with
``weight_loss`` = 1[conf ≥ τ] (propagated pixels get confidence 1, so M_exp is that mask on x_s);
``unsup: {weight: 0.5, supervised_weight: 0.25}`` gives the halves; ``extra_losses`` adds ¼·CE(p̂_x, y)
(the recipe's supervised loss) as it is and ¼·L_kl, ¼·L_corr times λ_u. The head runs once a step
on the labeled, weak and strong rows of the one student forward (``forward_heads``), where the
release runs it on cat(x, x_w) and on x_s in two forwards (two BatchNorm batches).
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssseg.api import (BuildContext, FeatureRequest, LabeledBatch, LossTerm, Pseudo, Run, StepContext,
                       StudentOutputs, View, ViewInput, all_reduce_max_, hookimpl, in_range, positive,
                       weighted_view_loss)
from ssseg_plugins.confidence_threshold import confident_mask
from ssseg_plugins.fixmatch import FixMatch

STRONG, FP = "s1", "fp"
PARTS = ("labeled", "weak", STRONG)  # the rows the head runs on, in this order


class CorrelationHead(nn.Module):
    """f = Dropout2d(ReLU(BN(conv3×3(F)))), K = W_k f, Q = W_q f and S = softmax(KᵀQ / √C)."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True), nn.Dropout2d(dropout))
        self.key = nn.Conv2d(channels, num_classes, 1)
        self.query = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
        """(p̂ ``[N,C,H,W]`` at the logits' size, S ``[N,hw,hw]``) for encoder features ``[N,D,h,w]``."""
        h, w = features.shape[-2:]
        f = self.proj(features)
        k, q = self.key(f).flatten(2), self.query(f).flatten(2)
        s = torch.softmax(k.transpose(1, 2) @ q / math.sqrt(k.shape[1]), dim=-1)
        p_small = F.interpolate(logits.detach(), (h, w), mode="bilinear", align_corners=True).flatten(2)
        p_hat = (p_small.to(s.dtype) @ s).unflatten(2, (h, w))
        return F.interpolate(p_hat, logits.shape[-2:], mode="bilinear", align_corners=True), s


def sample_regions(s: Tensor, grid: tuple[int, int], size: tuple[int, int], count: int,
                   generator: torch.Generator) -> Tensor:
    """R ``[N,count,H,W]`` (bool): ``count`` rows of S drawn uniformly from pixels 0..hw−2 (as
    released), each upsampled to ``size``, min-max normalised and thresholded at 0.5."""
    n, hw, _ = s.shape
    rows = torch.randint(0, hw - 1, (count,), generator=generator).to(s.device)
    maps = s.detach()[:, rows, :].float().reshape(n * count, 1, *grid)
    maps = F.interpolate(maps, size, mode="bilinear", align_corners=True).flatten(1)
    low, high = maps.min(1, keepdim=True).values, maps.max(1, keepdim=True).values
    return ((maps - low) / (high - low) > 0.5).reshape(n, count, *size)


def class_maxima(labels: Tensor, conf: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """max conf over the valid pixels predicted as each class ``[C]``, −1 for an absent class."""
    counted = torch.where(valid, conf.float(), torch.full_like(conf, -1.0, dtype=torch.float32))
    maxima = torch.full((labels.shape[0], num_classes), -1.0, device=conf.device)
    maxima.scatter_reduce_(1, labels.flatten(1), counted.flatten(1), reduce="amax")
    return maxima.amax(0)


def propagate_regions(regions: Tensor, labels: Tensor, confident: Tensor, tau: Tensor,
                      num_classes: int) -> tuple[Tensor, Tensor]:
    """(ŷ after region propagation, the pixels it relabelled ``[B,H,W]``): regions R ``[B,M,H,W]``
    in order, G_i = R_i ∧ confident, relabelled to the top class c* of ŷ on G_i when |G_i| > 0,
    |G_i|/|R_i| ≥ τ and c*'s share > τ. Batched over images; the regions are sequential, as each
    counts the labels the earlier ones wrote."""
    labels, changed = labels.clone(), torch.zeros_like(confident)
    b = labels.shape[0]
    for i in range(regions.shape[1]):
        region = regions[:, i]
        segment = region & confident
        size, area = segment.flatten(1).sum(1), region.flatten(1).sum(1)
        counts = torch.zeros(b, num_classes, device=labels.device)
        counts.scatter_add_(1, labels.flatten(1), segment.flatten(1).float())
        share, top = counts.max(1)
        apply = (size > 0) & (size / area.clamp_min(1) >= tau) & (share / size.clamp_min(1) > tau)
        relabel = region & apply.view(b, 1, 1)
        labels = torch.where(relabel, top.view(b, 1, 1), labels)
        changed |= relabel
    return labels, changed


class CorrMatch(FixMatch):
    """Views s1 and fp (¼ each), the correlation head, τ and region propagation."""

    name = "corrmatch"
    requires_hookspec = 7  # forward_heads

    @attrs.frozen
    class Config(FixMatch.Config):
        """FixMatch's probabilities and pseudo-label source, and: ``tau_init`` τ_0 and ``momentum``
        m of the adaptive threshold; ``regions`` M (rows of S sampled per step); the head's width
        ``head_channels`` and its Dropout2d ``head_dropout``; ``fp_dropout`` (the fp view); the
        coefficients of the labeled correlation loss and of L_kl and L_corr."""

        tau_init: float = attrs.field(default=0.85, validator=in_range(0, 1))
        momentum: float = attrs.field(default=0.999, validator=in_range(0, 1))
        regions: int = attrs.field(default=128, validator=positive)
        head_channels: int = attrs.field(default=256, validator=positive)
        head_dropout: float = attrs.field(default=0.1, validator=in_range(0, 1, hi_open=True))
        fp_dropout: float = attrs.field(default=0.5, validator=in_range(0, 1, hi_open=True))
        labeled_corr_weight: float = attrs.field(default=0.25, validator=in_range(0))
        kl_weight: float = attrs.field(default=0.25, validator=in_range(0))
        corr_weight: float = attrs.field(default=0.25, validator=in_range(0))

    @hookimpl
    def request_features(self) -> FeatureRequest:
        """The student's encoder features (and FixMatch's second weak view for ``same_image``)."""
        return FeatureRequest(student=("encoder",), second_view=self.config.mix_partner == "same_image")

    @hookimpl
    def build_modules(self, build: BuildContext) -> dict[str, nn.Module]:
        """The correlation head on the deepest encoder stage."""
        channels = build.student.feature_geometry()["encoder"][-1]
        return {"corrmatch_head": CorrelationHead(channels, build.data.num_classes, self.config.head_channels,
                                                  self.config.head_dropout)}

    @hookimpl
    def setup(self, run: Run) -> None:
        """τ = τ_0 on the run's device."""
        self.tau = torch.tensor(self.config.tau_init, device=run.device)

    @hookimpl
    def plan_views(self) -> list[View]:
        """s1 (¼) and fp (¼, feature dropout)."""
        return [View(STRONG, coef=0.25), View(FP, coef=0.25, kind="feature", dropout=self.config.fp_dropout)]

    @hookimpl
    def forward_heads(self, ctx: StepContext, outputs: StudentOutputs) -> dict[str, Tensor]:
        """p̂ of the labeled, weak and strong rows (one head call, with gradient) and the weak rows'
        regions R (no gradient)."""
        logits = {"labeled": outputs.labeled, "weak": outputs.weak, **outputs.views}
        parts = [p for p in PARTS if logits.get(p) is not None]
        features = torch.cat([outputs.features[p].encoder[-1] for p in parts])
        p_hat, s = ctx.modules["corrmatch_head"](features, torch.cat([logits[p] for p in parts]))
        sizes = [logits[p].shape[0] for p in parts]
        heads = {f"corrmatch/p_hat/{p}": rows for p, rows in zip(parts, p_hat.split(sizes))}
        if "weak" in parts:
            weak_s = dict(zip(parts, s.split(sizes)))["weak"]
            heads["corrmatch/regions"] = sample_regions(weak_s, tuple(features.shape[-2:]),
                                                        tuple(outputs.weak.shape[-2:]), self.config.regions,
                                                        ctx.generator)
        return heads

    @hookimpl
    def relabel(self, ctx: StepContext, pseudo: Pseudo, views: dict[str, ViewInput],
                outputs: StudentOutputs) -> dict[str, Pseudo] | None:
        """τ updated from this step's weak pseudo-labels (every process's), then region propagation
        on s1's pseudo-labels outside its CutMix boxes; relabelled pixels get confidence 1."""
        strong = views.get(STRONG)
        if strong is None:
            return None
        target = strong.pseudo
        maxima = all_reduce_max_(class_maxima(pseudo.labels, pseudo.conf, target.valid, ctx.num_classes))
        present = maxima >= 0
        if bool(present.any()):
            self.tau = self.config.momentum * self.tau + (1 - self.config.momentum) * maxima[present].mean()
        ctx.log("corrmatch/tau", self.tau)
        box = mixed_box(strong)
        regions = outputs.heads["corrmatch/regions"] & ~box.unsqueeze(1) & target.valid.unsqueeze(1)
        confident = (target.conf >= self.tau) & target.valid
        labels, changed = propagate_regions(regions, target.labels, confident, self.tau, ctx.num_classes)
        ctx.log("corrmatch/propagated", changed.float().mean())
        one_hot = Pseudo.from_ground_truth(labels, ctx.num_classes, ctx.ignore_index, target.logits.dtype).logits
        return {STRONG: attrs.evolve(target, labels=labels,
                                     conf=torch.where(changed, torch.ones_like(target.conf), target.conf),
                                     logits=torch.where(changed.unsqueeze(1), one_hot, target.logits))}

    @hookimpl
    def weight_loss(self, ctx: StepContext, view: View, pseudo: Pseudo) -> Tensor:
        """1[conf ≥ τ] ``[B,H,W]`` (on s1: M_exp, the propagated pixels having confidence 1)."""
        return confident_mask(ctx, view, pseudo, self.tau)

    @hookimpl
    def extra_losses(self, ctx: StepContext, labeled: LabeledBatch, pseudo: Pseudo,
                     views: dict[str, ViewInput], outputs: StudentOutputs) -> dict[str, Tensor | LossTerm]:
        """¼·CE(p̂_x, y) as it is; ¼·L_kl and ¼·L_corr times λ_u."""
        c, heads = self.config, outputs.heads
        terms: dict[str, Tensor | LossTerm] = {
            "corrmatch/corr_x": c.labeled_corr_weight * ctx.supervised_loss(heads["corrmatch/p_hat/labeled"],
                                                                            labeled.mask)}
        strong, fp = views.get(STRONG), views.get(FP)
        if strong is None or fp is None:
            return terms
        target = strong.pseudo
        corr_s = weighted_view_loss(heads[f"corrmatch/p_hat/{STRONG}"], target, strong.weight)
        corr_w = weighted_view_loss(heads["corrmatch/p_hat/weak"], fp.pseudo, fp.weight)
        # conf before propagation: the partner's inside the box, the weak view's outside it
        conf = torch.where(mixed_box(strong), target.conf, pseudo.conf)
        mask = ((conf >= self.tau) & target.valid).float()
        q = pseudo.logits.float().log_softmax(1)
        kl = (q.exp() * (q - outputs.views[STRONG].float().log_softmax(1))).sum(1)
        loss_kl = (kl * mask).sum() / target.valid.float().sum().clamp_min(1)
        terms["corrmatch/kl"] = LossTerm(c.kl_weight * loss_kl, times_lambda_u=True)
        terms["corrmatch/corr"] = LossTerm(c.corr_weight * 0.5 * (corr_s + corr_w), times_lambda_u=True)
        return terms

    def state_dict(self) -> dict:
        """τ."""
        return {"tau": float(self.tau)}

    def load_state_dict(self, state: dict) -> None:
        """Restore τ."""
        self.tau = torch.tensor(float(state["tau"]), device=self.tau.device)


def mixed_box(view: ViewInput) -> Tensor:
    """The pixels of ``view`` pasted by its plan's CutMixes ``[B,H,W]`` (none without a plan)."""
    box = torch.zeros_like(view.pseudo.valid)
    for cut in view.plan.mixes if view.plan is not None else ():
        box = box | cut.box
    return box
