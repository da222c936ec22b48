"""U2PL (Wang et al., "Semi-Supervised Semantic Segmentation Using Unreliable Pseudo-Labels", CVPR
2022), as released (Haochen-Wang409/U2PL at ab3d2be: train_semi.py, u2pl/utils/loss_helper.py).

Compose with ``mean_teacher`` (the EMA teacher f^t). Per step, with the labeled batch (x, y) and
the weak unlabeled batch u (e = epoch, E = epochs, t = global iteration):

    ŷ = argmax f^t(u)                   teacher in eval mode, before the student (the core)
    û, ŷ ← CutMix(u, ŷ)                 w.p. 0.5 per batch (shared generator); per image a box of
                                        area H·W/2, width w ~ U{⌊W/2⌋+1 … W−1}, height
                                        round(H·W/2/w), inside the crop; filled from image (i+1) mod B
    P, R = f(cat(x, û)), g(F)           one student forward; R: representation head g on the
                                        decoder output F (``build_modules``: "u2pl_rep")
    L_s = CE(P_x, y)                    the core's supervised loss
    P^t, Q^t = f^t(cat(x, û)), softmax(P^t)     teacher in TRAIN mode, no gradient (BN batch
    R^t = ḡ(F^t)                        statistics); ḡ = EMA of g (this plugin's state)
    α_t = α_0 · (1 − e/E)               percent; α_0 = 20
    H_p = −Σ_c Q^t_pc log(Q^t_pc + 1e−10)          entropy of the teacher on û, crop resolution
    γ_t = pct_{100−α_t}(H)              per batch, numpy's linear percentile over valid pixels

    L_u = (N / N_k) · 1/N_k Σ_{p: H_p < γ_t} CE(P_u,p, ŷ_p)
                                        the top α_t % entropy ("unreliable") pixels are dropped;
                                        N valid pixels, N_k kept: the paper's λ_u = |B_u|HW/Σ1[ŷ≠ignore]

Contrastive loss with unreliable pixels as negatives, at the decoder's resolution (labels, masks
and Q^t nearest-sampled on the decoder grid). low = {x: y valid; û: H ≤ pct_{α_t}(H)},
high = {x: y valid; û: H ≥ pct_{100−α_t}(H)}; label = y on x, ŷ on û, one-hot per image
(``label_p ∋ c``: the label of pixel p is c); rank_p(c) = place of c in Q^t_p sorted descending
(0 = top). For every class c:

    A_c   = {R_p : label_p ∋ c, low_p, Q^t_pc > δ_p}                  anchors (δ_p = 0.3)
    z_c⁺  = mean{R^t_p : label_p ∋ c, low_p}                           positive, no gradient
    queue_c ← newest of queue_c ∪ {R^t_p : label_p ∋ c, high_p, Q^t_pc < δ_n,
                 û: r_l ≤ rank_p(c) < r_h;  x: rank_p(c) < r_l and label_p ∌ c}  (r_l, r_h = 3, 20)
    ℓ_c   = mean over M anchors a ~ A_c (uniform, with replacement) of
            −log softmax_0([cos(a, z_c⁺), cos(a, n_1), …, cos(a, n_N)] / τ),  n_k ~ queue_c
    L_c   = 1/V Σ_j ℓ_j over the V classes with a non-empty {label ∋ c, low}; 0 when V ≤ 1

    L = L_s + λ_u·L_u + λ_c·L_c          λ_u = ``unsup.weight`` (1), λ_c = ``contrastive_weight``

(M, N) = (256, 50), τ = 0.5; the queue holds 30,000 keys per class (class 0: 50,000), CPU, newest
kept, enqueued (all-gathered over processes) before sampling. Warm start: during the first
``sup_only_epochs`` (S = 1) epochs the student trains on x only (no view is planned) and both
terms are 0. The teacher is the student's copy through epoch S and an EMA afterwards: recipes set
``mean_teacher: {decay: 0.99, warmup_epochs: S + 1}``; ḡ follows the same schedule here,
d_t = 0 while e ≤ S, else min(1 − 1/(t + 1), ``ema_decay``), over parameters.

Released quirks kept by default, each with an option:

- ``queue_pairing: released``: the j-th valid class takes the anchors and positive of class j but
  the negatives of class valid_classes[j] (the same class only when the valid classes are 0…V−1;
  issue #111). ``same_class`` pairs them by class.
- ``contrastive: released`` builds the sets above. ``paper`` (Eqs. 9-16): anchors are the reliable
  pixels (x: y = c; û: ŷ = c, H < γ_t; both Q^t_c > δ_p); z_c⁺ = mean R^t over the anchors;
  negatives for c without the label-is-c condition (x: y ≠ c, rank(c) < r_l; û: H ≥ γ_t,
  r_l ≤ rank(c) < r_h); L_c = 1/C Σ_c ℓ_c over all C classes, pairing by class. The paper's
  (M, N) = (50, 256) and λ_c = 0.1 are recipe values.

Released quirks reproduced by an option that is off by default:

- ``contrastive_labels: released``: the released ``label_onehot`` scatters a ``[B,1,H,W]`` index
  along dim 0 of a ``[C,B,H,W]`` tensor, so only image 0's slot is written: image 0 of the labeled
  and of the unlabeled batch carries the union of its batch's labels at each pixel (a multi-hot;
  an ignored pixel of another image counts as class 0; image 0's own ignored pixels are cleared)
  and images 1…B−1 carry none. On VOC's 4 + 4 per GPU only the first labeled and the first
  unlabeled image give anchors, positives and queue keys, and a pixel of image 0 is an anchor of
  every class some image has there. Off by default (``per_image``, the per-image one-hot the paper
  describes, which is the released function with the one-hot laid out per image) because it is an
  indexing slip, not a method choice: it discards B − 1 of B images per batch from L_c.
- ``shared_boxes: true``: the CutMix boxes come from ``ctx.shared_generator``, so every process
  draws the same boxes, as the released code does (one numpy seed on every rank, the boxes drawn in
  the training loop); off by default: per-process boxes are independent draws.

Where this differs from the released code, and why:

- λ_c: the released L_c' = all_reduce_sum(L_c)/W is not differentiable through the reduce, so its
  effective contrastive weight is 1/W (0.25 on VOC's 4 GPUs). Here the weight is applied as given
  (default 1.0, the released config value on one device); set ``contrastive_weight: 1/W`` to
  reproduce a W-GPU run (recipes/paper/u2pl_voc_classic.yaml does).
- Padding: ssseg marks padded pixels invalid, and they enter neither the percentiles, L_u (N counts
  valid pixels, not B·H·W) nor the pixel sets; the released loader pads labels with class 0 (and
  the image with 0 after normalisation, the mean colour: ``data.pad_color: imagenet_mean``), so
  padding is trained as background there, in L_s and, through ŷ, in L_u and L_c. It also pads
  both sides of the image by half (ssseg: bottom and right).
- Resolution: Q^t (softmax of the crop-resolution logits) and the masks are sampled on the
  decoder grid (pixel (i, j) ← input pixel (r·i, r·j), r = the decoder's reduction), because smp's
  classifier upsamples inside the model; the released Q^t is the softmax of the 1/4-resolution
  logits, and its masks are nearest-downsampled from the crop without ssseg's stride padding.
- Representation head: the released layout (3×3 conv, BN, ReLU, Dropout2d 0.1, twice, then 1×1
  to ``rep_dim``) on smp's decoder output, whose width is the decoder's (256 for DeepLabV3+), not
  U2PL's 512-channel concatenation.
- The teacher's BN buffers: ``mean_teacher`` averages them with the student's after each step
  (the released EMA covers parameters only); the train-mode teacher forward still moves them.
- Warm start: the released teacher also forwards x in train mode to move its BN statistics; here
  the teacher is a copy of the student until epoch S + 1, so that forward is skipped.
- EMA ramp: d = min(1 − 1/(t + 1), α) with the global t, as ``mean_teacher``; the released ramp
  restarts at epoch S (1 − 1/(t − L·S + 1)); both give α from epoch S + 1 on when an epoch has at
  least 99 iterations (VOC 569, the embedded recipe 237).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssseg.api import (AugmentationPlan, BuildContext, CutMix, FeatureRequest, LabeledBatch, LossTerm, Plugin, Run,
                       StepContext, StudentOutputs, UnlabeledBatch, UserError, View, ViewInput,
                       all_gather_rows, ema_decay, ema_update_, hookimpl, in_range, positive)
from ssseg.augment import box_masks

VIEW = "mix"


def representation_head(in_channels: int, rep_dim: int) -> nn.Module:
    """g: the released representation head (3×3 conv, BN, ReLU, Dropout2d 0.1, twice; 1×1 conv)."""
    def block(cin: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, rep_dim, 3, padding=1), nn.BatchNorm2d(rep_dim), nn.ReLU(inplace=True),
                nn.Dropout2d(0.1)]

    return nn.Sequential(*block(in_channels), *block(rep_dim), nn.Conv2d(rep_dim, rep_dim, 1))




def u2pl_boxes(batch_size: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """U2PL's CutMix boxes ``[B,H,W]`` (released ``generate_cutout_mask``): width w uniform in
    {⌊W/2⌋+1, …, W−1}, height round(H·W/2/w) (half to even, as numpy), top-left uniform with the
    box inside the crop; area H·W/2 up to rounding, both sides over half the crop."""
    height, width = size
    device = generator.device
    low = width // 2 + 1
    w = torch.randint(low, max(width, low + 1), (batch_size,), generator=generator, device=device)
    h = torch.round(height * width / 2 / w.double()).long().clamp(1, height)
    def uniform() -> Tensor:
        return torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)

    top, left = (uniform() * (height - h + 1)).long(), (uniform() * (width - w + 1)).long()
    return box_masks(top, left, h, w, size)


def alpha_at(alpha0: float, epoch: int, epochs: int) -> float:
    """α_t = α_0·(1 − e/E) percent (never below 0)."""
    return max(alpha0 * (1 - epoch / max(epochs, 1)), 0.0)


def percentile(values: Tensor, q: float) -> Tensor:
    """numpy.percentile(values, q) with linear interpolation, of a flat non-empty tensor, by two
    ``kthvalue`` calls (no sort of the whole tensor and no torch.quantile size limit)."""
    n = values.numel()
    position = q / 100 * (n - 1)
    below = min(int(math.floor(position)), n - 1)
    low = values.kthvalue(below + 1).values
    if below + 1 >= n or position == below:
        return low
    high = values.kthvalue(below + 2).values
    return low + (high - low) * (position - below)


def entropy(probs: Tensor) -> Tensor:
    """H = −Σ_c p_c log(p_c + 1e−10) ``[B,H,W]`` of probabilities ``[B,C,H,W]``."""
    return -(probs * torch.log(probs + 1e-10)).sum(1)


def unsup_loss(logits: Tensor, labels: Tensor, entropies: Tensor, valid: Tensor, alpha: float,
               weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(L_u, N_k/N): CE of the student ``logits`` against ``labels`` ŷ over the valid pixels whose
    teacher entropy is below γ = pct_{100−α}(H) (the top α % are dropped), mean over the kept
    N_k pixels times N/N_k; each pixel's CE times ``weight`` (the view's ``weight_loss``
    product; None: 1)."""
    n = valid.sum()
    if not bool(n):
        return logits.sum() * 0, n.float()
    gamma = percentile(entropies[valid], 100 - alpha)
    kept = valid & (entropies < gamma)
    n_k = kept.sum().clamp_min(1)
    ce = F.cross_entropy(logits, labels, reduction="none")
    if weight is not None:
        ce = ce * weight
    return (n / n_k) * (ce * kept).sum() / n_k, kept.sum() / n


def on_decoder_grid(x: Tensor, size: tuple[int, int], reduction: int, fill: float | int | bool) -> Tensor:
    """``x`` ``[..., H, W]`` at the crop's resolution sampled on the decoder's grid ``size``:
    decoder pixel (i, j) takes input pixel (r·i, r·j) of the input padded to the model's stride
    (the padding gets ``fill``)."""
    h, w = size
    out = x.new_full((*x.shape[:-2], h * reduction, w * reduction), fill)
    rows, cols = min(x.shape[-2], h * reduction), min(x.shape[-1], w * reduction)
    out[..., :rows, :cols] = x[..., :rows, :cols]
    return out[..., ::reduction, ::reduction]


def per_image_labels(label: Tensor, num_classes: int) -> Tensor:
    """``label_p ∋ c`` ``[N,C,h,w]`` (bool) of a label map ``[N,h,w]`` (−1: none): the one-hot of
    each image's own label."""
    classes = torch.arange(num_classes, device=label.device).view(1, -1, 1, 1)
    return label.unsqueeze(1) == classes


def released_labels(label: Tensor, num_classes: int) -> Tensor:
    """``label_p ∋ c`` ``[N,C,h,w]`` as the released ``label_onehot`` lays it out, for one batch
    (labeled or unlabeled) ``[N,h,w]`` (−1: none): image 0 holds, at each pixel where it has a
    label, every class some image of the batch has there (a pixel without a label counts as class
    0); images 1…N−1 hold none."""
    union = per_image_labels(label.clamp_min(0), num_classes).any(0)  # [C,h,w]
    out = torch.zeros(label.shape[0], num_classes, *label.shape[1:], dtype=torch.bool, device=label.device)
    out[0] = union & (label[0] >= 0)
    return out


@attrs.frozen
class PixelSets:
    """Per class c, boolean masks ``[N,h,w]`` on the decoder grid: the anchors A_c, the pixels
    whose teacher representations average to z_c⁺, and the pixels enqueued as negatives of c;
    ``valid``: the classes counted in V, in class order."""

    anchors: list[Tensor]
    positives: list[Tensor]
    negatives: list[Tensor]
    valid: list[int]


def pixel_sets(labels: Tensor, probs: Tensor, pool: Tensor, high: Tensor, labeled_rows: int,
               delta_p: float, delta_n: float, ranks: tuple[int, int],
               rule: Literal["released", "paper"] = "released") -> PixelSets:
    """The pixel sets of every class. ``labels`` ``[N,C,h,w]`` (bool) whether pixel p is labelled
    c (y on the first ``labeled_rows`` rows, ŷ on the rest; :func:`per_image_labels` or
    :func:`released_labels`), ``probs`` Q^t ``[N,C,h,w]``, ``pool`` the anchor pool (released:
    low; paper: reliable) and ``high`` ``[N,h,w]``."""
    unlabeled = torch.arange(labels.shape[0], device=labels.device).view(-1, 1, 1) >= labeled_rows
    rank = probs.argsort(1, descending=True).argsort(1)  # rank_p(c), 0 = most probable
    r_l, r_h = ranks
    anchors, positives, negatives, valid = [], [], [], []
    for c in range(probs.shape[1]):
        is_c, q_c, rank_c = labels[:, c], probs[:, c], rank[:, c]
        region = is_c & pool
        anchor = region & (q_c > delta_p)
        rank_ok = torch.where(unlabeled, (rank_c >= r_l) & (rank_c < r_h), (rank_c < r_l) & ~is_c)
        negative = high & (q_c < delta_n) & rank_ok
        if rule == "released":
            negative = negative & is_c  # with rank(c) < r_l ∧ y ≠ c, no labeled pixel passes
        anchors.append(anchor)
        positives.append(region if rule == "released" else anchor)
        negatives.append(negative)
        if bool((region if rule == "released" else anchor).any()):
            valid.append(c)
    return PixelSets(anchors, positives, negatives, valid)


def enqueue(queues: list[Tensor], keys: list[Tensor], sizes: list[int]) -> list[Tensor]:
    """Each class's queue with its new ``keys`` appended (float32, CPU), cut to its newest ``sizes``."""
    return [torch.cat([q, k.detach().float().cpu()])[-size:]
            for q, k, size in zip(queues, keys, sizes, strict=True)]


def info_nce(anchors: Tensor, positive: Tensor, queue: Tensor, num_anchors: int, num_negatives: int,
             temperature: float, generator: torch.Generator) -> Tensor:
    """ℓ: ``num_anchors`` anchors drawn from ``anchors`` ``[n,D]`` and, per anchor,
    ``num_negatives`` keys drawn from ``queue`` ``[m,D]`` (CPU), uniformly with replacement;
    CE of [cos(a, z⁺), cos(a, n_1…n_N)] / τ with the positive ``[D]`` as class 0, mean over anchors."""
    pick = torch.randint(anchors.shape[0], (num_anchors,), generator=generator)
    a = anchors[pick.to(anchors.device)].float()
    draw = torch.randint(queue.shape[0], (num_anchors * num_negatives,), generator=generator)
    negatives = queue[draw].to(a.device).view(num_anchors, num_negatives, -1)
    keys = torch.cat([positive.float().expand(num_anchors, 1, -1), negatives], 1)
    logits = F.cosine_similarity(a.unsqueeze(1), keys, dim=2) / temperature
    return F.cross_entropy(logits, torch.zeros(num_anchors, dtype=torch.long, device=a.device))


def _rank_order(config, attribute, value: int) -> None:
    if value <= config.rank_low:
        err = ValueError(f"{value!r} must be > rank_low ({config.rank_low})")
        err.ssseg_field = attribute.name
        raise err


class U2PL(Plugin):
    """U2PL's L_u (entropy-filtered pseudo-labels) and L_c (unreliable pixels as queued
    negatives), its CutMix view and its representation head."""

    name = "u2pl"
    requires_hookspec = 5
    requires = {"build_teacher": "mean_teacher: {decay: 0.99, warmup_epochs: 2}"}  # Q^t, R^t: a teacher

    @attrs.frozen
    class Config:
        """``sup_only_epochs`` S (warm start); ``p_cutmix``; ``alpha0`` α_0 of L_u and
        ``alpha0_contrastive`` of L_c (percent; released ``100 − drop_percent`` and
        ``low_entropy_threshold``); ``rep_dim``; ``ema_decay`` of ḡ (the teacher's α);
        ``delta_p``, ``delta_n`` (δ_n = 1 is inert); ``rank_low``, ``rank_high`` r_l, r_h;
        ``num_anchors`` M and ``num_negatives`` N; ``temperature`` τ; ``queue_size`` per class and
        ``queue_size_class0``; ``contrastive_weight`` λ_c; ``contrastive`` rule,
        ``queue_pairing``, ``contrastive_labels`` and ``shared_boxes`` (module docstring)."""

        sup_only_epochs: int = attrs.field(default=1, validator=in_range(0))
        p_cutmix: float = attrs.field(default=0.5, validator=in_range(0, 1))
        alpha0: float = attrs.field(default=20.0, validator=in_range(0, 100))
        alpha0_contrastive: float = attrs.field(default=20.0, validator=in_range(0, 100))
        rep_dim: int = attrs.field(default=256, validator=positive)
        ema_decay: float = attrs.field(default=0.99, validator=in_range(0, 1, hi_open=True))
        delta_p: float = attrs.field(default=0.3, validator=in_range(0, 1))
        delta_n: float = attrs.field(default=1.0, validator=in_range(0, 1))
        rank_low: int = attrs.field(default=3, validator=in_range(0))
        rank_high: int = attrs.field(default=20, validator=_rank_order)
        num_anchors: int = attrs.field(default=256, validator=positive)
        num_negatives: int = attrs.field(default=50, validator=positive)
        temperature: float = attrs.field(default=0.5, validator=positive)
        queue_size: int = attrs.field(default=30000, validator=positive)
        queue_size_class0: int = attrs.field(default=50000, validator=positive)
        contrastive_weight: float = attrs.field(default=1.0, validator=in_range(0))
        contrastive: Literal["released", "paper"] = "released"
        queue_pairing: Literal["released", "same_class"] = "released"
        contrastive_labels: Literal["per_image", "released"] = "per_image"
        shared_boxes: bool = False

    def __init__(self, config):
        super().__init__(config)
        self.reduction = 1  # r: input pixels per decoder pixel along each axis
        self.head: nn.Module | None = None  # g (the plain module; ctx.modules holds it wrapped)
        self.ema_head: nn.Module | None = None  # ḡ
        self.queues: list[Tensor] = []

    # -- build -------------------------------------------------------------------------------

    @hookimpl
    def build_modules(self, build: BuildContext) -> dict[str, nn.Module]:
        """g on the decoder output F, whose width and reduction the student reports (unused in
        the warm start, so DDP searches its graph for unused parameters)."""
        geometry = build.student.feature_geometry()
        self.reduction = geometry["decoder_reduction"]
        head = representation_head(geometry["decoder"], self.config.rep_dim)
        head.ddp_find_unused_parameters = True
        return {"u2pl_rep": head}

    @hookimpl
    def setup(self, run: Run) -> None:
        """ḡ ← g (a frozen copy); one empty queue per class."""
        self.head = run.modules["u2pl_rep"]
        self.ema_head = copy.deepcopy(self.head).requires_grad_(False)
        self.queues = [torch.zeros(0, self.config.rep_dim) for _ in range(run.data.num_classes)]

    @hookimpl
    def validate(self, pseudo_label_source: str) -> None:
        """ŷ comes from the teacher: refuse a recipe whose pseudo-label source is 'none'."""
        if pseudo_label_source == "none":
            raise UserError(f"plugins.{self.recipe_key or self.name}: needs the teacher's pseudo-labels ŷ, "
                            "but the pseudo-label source is 'none' (a co-training plugin such as cps "
                            "makes its own targets): remove one of them")

    @hookimpl
    def request_features(self) -> FeatureRequest:
        """F of the student's forward."""
        return FeatureRequest(student=("decoder",))

    # -- the step ----------------------------------------------------------------------------

    def warm(self, ctx: StepContext) -> bool:
        """Whether this step is in the warm start (e < S: supervised only)."""
        return ctx.epoch < self.config.sup_only_epochs

    @hookimpl
    def plan_views(self, ctx: StepContext) -> list[View]:
        """û (coefficient 0: L_u is this plugin's), none during the warm start."""
        return [] if self.warm(ctx) else [View(VIEW, coef=0.0)]

    @hookimpl
    def schedule_augmentation(self, ctx: StepContext, view: View, unlabeled: UnlabeledBatch
                              ) -> AugmentationPlan | None:
        """CutMix w.p. ``p_cutmix`` per batch (shared generator); per-image boxes from
        ``ctx.generator`` (``ctx.shared_generator`` with ``shared_boxes``); image i receives from
        image (i + 1) mod B. None: û = u."""
        fired = bool(torch.rand((), generator=ctx.shared_generator) < self.config.p_cutmix)
        ctx.log("u2pl/cutmix", float(fired))
        if not fired:
            return None
        b, device = unlabeled.image.shape[0], unlabeled.image.device
        boxes = ctx.shared_generator if self.config.shared_boxes else ctx.generator
        box = u2pl_boxes(b, tuple(unlabeled.image.shape[-2:]), boxes).to(device)
        return AugmentationPlan(mixes=(CutMix(box, (torch.arange(b, device=device) + 1) % b),))

    @torch.no_grad()
    def teacher_forward(self, ctx: StepContext, images: Tensor) -> tuple[Tensor, Tensor]:
        """(P^t, R^t): the teacher and ḡ in train mode (batch statistics, dropout), no gradient."""
        teacher, was_training = ctx.teacher, ctx.teacher.training
        teacher.train()
        try:
            out = teacher(images, features=("decoder",))
        finally:
            teacher.train(was_training)
        return out["logits"], self.ema_head.train()(out["decoder"])

    @hookimpl
    def extra_losses(self, ctx: StepContext, labeled: LabeledBatch, views: dict[str, ViewInput],
                     outputs: StudentOutputs) -> dict[str, Tensor | LossTerm]:
        """L_u (times λ_u) and λ_c·L_c; zeros during the warm start."""
        mix = views.get(VIEW)
        if mix is None:
            zero = outputs.labeled.sum() * 0
            return {"u2pl/unsup": LossTerm(zero, times_lambda_u=True), "u2pl/contrastive": zero}
        c, bl = self.config, labeled.image.shape[0]
        epochs = ctx.max_iters // ctx.iters_per_epoch
        teacher_logits, rep_t = self.teacher_forward(ctx, torch.cat([labeled.image, mix.image]))
        probs = teacher_logits.float().softmax(1)
        h, valid, y_hat = entropy(probs[bl:]), mix.pseudo.valid, mix.pseudo.labels

        alpha = alpha_at(c.alpha0, ctx.epoch, epochs)
        loss_u, kept = unsup_loss(outputs.views[VIEW], y_hat, h, valid, alpha, mix.weight)

        decoded = torch.cat([outputs.features["labeled"].decoder, outputs.features[VIEW].decoder])
        rep = ctx.modules["u2pl_rep"](decoded)  # the only call of g this step, with gradient
        loss_c = self.contrastive_loss(ctx, labeled, rep, rep_t, probs, h, valid, y_hat,
                                       alpha_at(c.alpha0_contrastive, ctx.epoch, epochs))
        ctx.log("u2pl/alpha_t", alpha)
        ctx.log("u2pl/kept", kept)
        return {"u2pl/unsup": LossTerm(loss_u, times_lambda_u=True),
                "u2pl/contrastive": c.contrastive_weight * loss_c}

    def contrastive_loss(self, ctx: StepContext, labeled: LabeledBatch, rep: Tensor, rep_t: Tensor,
                         probs: Tensor, h: Tensor, valid: Tensor, y_hat: Tensor, alpha: float) -> Tensor:
        """L_c: the pixel sets on the decoder grid, the queues updated, then the InfoNCE terms."""
        c, bl, grid, r = self.config, labeled.image.shape[0], tuple(rep.shape[-2:]), self.reduction
        low_u = high_u = valid
        if bool(valid.any()):
            low_u = valid & (h <= percentile(h[valid], alpha))
            high_u = valid & (h >= percentile(h[valid], 100 - alpha))
        labeled_valid = labeled.mask != ctx.ignore_index
        pool_u = low_u if c.contrastive == "released" else valid & ~high_u
        label = torch.cat([torch.where(labeled_valid, labeled.mask, -1), torch.where(valid, y_hat, -1)])
        label, classes = on_decoder_grid(label, grid, r, -1), probs.shape[1]
        if c.contrastive_labels == "released":  # label_onehot of the labeled and the unlabeled batch
            labels = torch.cat([released_labels(label[:bl], classes), released_labels(label[bl:], classes)])
        else:
            labels = per_image_labels(label, classes)
        sets = pixel_sets(labels, on_decoder_grid(probs, grid, r, 0.0),
                          on_decoder_grid(torch.cat([labeled_valid, pool_u]), grid, r, False),
                          on_decoder_grid(torch.cat([labeled_valid, high_u]), grid, r, False), bl,
                          c.delta_p, c.delta_n, (c.rank_low, c.rank_high), c.contrastive)
        pixels, pixels_t = rep.permute(0, 2, 3, 1), rep_t.permute(0, 2, 3, 1)
        self.queues = enqueue(self.queues, gathered_keys(pixels_t, sets.negatives), self.queue_sizes())
        ctx.log("u2pl/valid_classes", len(sets.valid))
        return contrastive_from_sets(pixels, pixels_t, sets, self.queues, c, ctx.generator)

    def queue_sizes(self) -> list[int]:
        """Each class's queue length (class 0 has its own)."""
        sizes = [self.config.queue_size] * len(self.queues)
        return [self.config.queue_size_class0, *sizes[1:]] if sizes else sizes

    @hookimpl
    @torch.no_grad()
    def after_optimizer_step(self, ctx: StepContext) -> None:
        """ḡ ← d·ḡ + (1 − d)·g over parameters; d = 0 through epoch S, then
        min(1 − 1/(t + 1), α)."""
        d = 0.0 if ctx.epoch <= self.config.sup_only_epochs else ema_decay(ctx.iteration, self.config.ema_decay)
        ema_update_(list(self.ema_head.parameters()), list(self.head.parameters()), d)

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The queues and ḡ."""
        return {"queues": list(self.queues), "ema_head": self.ema_head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the queues and ḡ."""
        if len(state["queues"]) != len(self.queues):
            raise ValueError(f"u2pl: {len(state['queues'])} queues saved, {len(self.queues)} classes now")
        self.queues = [q.float().cpu().clone() for q in state["queues"]]
        self.ema_head.load_state_dict(state["ema_head"])


def gathered_keys(pixels_t: Tensor, negatives: list[Tensor]) -> list[Tensor]:
    """Per class, the teacher representations ``[k,D]`` at its negative pixels, from every process
    (one all-gather for all classes)."""
    keys = torch.cat([pixels_t[m] for m in negatives]).float()
    owner = torch.cat([torch.full((int(m.sum()),), float(c), device=pixels_t.device)
                       for c, m in enumerate(negatives)])
    rows = all_gather_rows(torch.cat([keys, owner.unsqueeze(1)], 1))
    return [rows[rows[:, -1] == c, :-1] for c in range(len(negatives))]


def contrastive_from_sets(pixels: Tensor, pixels_t: Tensor, sets: PixelSets, queues: list[Tensor], config,
                          generator: torch.Generator) -> Tensor:
    """L_c from the student and teacher representations ``[N,h,w,D]``, the pixel sets and the
    (already updated) queues: released, 1/V Σ_j ℓ_j (0 when V ≤ 1; pairing as ``queue_pairing``);
    paper, 1/C Σ_c ℓ_c. A class without anchors or negatives adds 0."""
    zero = pixels.sum() * 0
    if config.contrastive == "released":
        if len(sets.valid) <= 1:
            return zero
        pairs = [(j if config.queue_pairing == "released" else c, c) for j, c in enumerate(sets.valid)]
        count = len(sets.valid)
    else:
        pairs, count = [(c, c) for c in sets.valid], len(queues)
    total = zero
    for own, negatives_of in pairs:  # (class of anchors and positive, class of the queue)
        anchors, queue = pixels[sets.anchors[own]], queues[negatives_of]
        if anchors.shape[0] == 0 or queue.shape[0] == 0:
            continue
        positive = pixels_t[sets.positives[own]].mean(0).detach()
        total = total + info_nce(anchors, positive, queue, config.num_anchors, config.num_negatives,
                                 config.temperature, generator)
    return total / count
