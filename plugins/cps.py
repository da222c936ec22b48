"""Cross pseudo supervision, CPS (Chen et al., CVPR 2021; released code charlesCXK/TorchSemiSeg).

Two networks of one architecture, f1 (the student) and f2 (a second ``run.new_model`` that differs
only in its initialisation, seed ``f2_seed``), each learn the other's hard pseudo-labels. With the
labeled batch x (labels y) and the weak unlabeled batch u:

    a1 = f1(x),  b1 = f1(u),  a2 = f2(x),  b2 = f2(u)         train mode, with gradient
    Y1 = argmax cat(a1, b1),  Y2 = argmax cat(a2, b2)         hard, no threshold, no gradient
    L_s   = CE(a1, y) + CE(a2, y)                             ignoring the ignore index
    L_cps = CE(cat(a1, b1), Y2) + CE(cat(a2, b2), Y1)         mean over every pixel, padding included
    L     = L_s + λ · L_cps                                   λ = ``unsup.weight`` (VOC 1.5, City 6)

CPS + CutMix (``cutmix: true``), with a box mask M ∈ {0,1}^{B×H×W} and a partner π per image:

    u_mix = (1 − M) ⊙ u + M ⊙ u_π
    Yk    = argmax [(1 − M) ⊙ fk(u) + M ⊙ fk(u)_π]             k = 1, 2: no gradient, still train mode
    sk    = fk(u_mix)                                         with gradient
    L_cps = CE(s1, Y2) + CE(s2, Y1)                           no CPS term on the labeled images
    L     = L_s + λ · L_cps                                   λ = 1 (VOC), 5 (City)

M: per image 3 boxes; each draws an area fraction a ~ U(0.25, 0.5) and v ~ U(0, 1), side fractions
h = a^v · √(1/3) and w = a^(1−v) · √(1/3) (so a box covers a/3 of the crop), pixel sizes
round(h·H) × round(w·W), a top-left corner round((H − size) · U(0, 1)) per axis so the box lies
inside the crop; M starts at 0 and each box toggles its region (overlaps cancel: XOR).
π: a random cycle through the batch drawn per step, so no image is its own partner (B ≥ 2).

In ssseg terms: f1's a1 and b1 (or s1) are the core's student forward of the labeled images and a
coefficient-0 view ("u", or "mix" with CutMix); f2 is trained under the student's optimiser rules
(``build_modules``); L_s of f1 is the core's L_x, and f2's CE(a2, y) and L_cps are this plugin's
``extra_losses`` (L_cps as a λ-scaled ``LossTerm``), so the recipe needs
``unsup: {weight: λ, supervised_weight: 1}``. The pseudo-label source is "none": no teacher.

Differences from the released code:

- One forward per network and step on the concatenated batch cat(x, u) (or cat(x, u_mix)), so
  BatchNorm statistics are over the joint batch; the released code runs 4 separate forwards
  (a1, b1, a2, b2), each normalised over its own batch.
- One optimiser with two sets of parameter groups (f1's, then f2's) under one poly schedule instead
  of two SGD optimisers: the same updates for SGD with equal hyperparameters. Weight decay applies
  to every parameter here; the released code decays conv weights only.
- CutMix: the no-gradient pseudo-label forwards run after the gradient forwards (inside
  ``extra_losses``), not before; their train-mode outputs are the same, only the order of the
  BatchNorm running-statistics updates differs. One forward of u per network replaces the released
  fk(u_a) and fk(u_b), since u_b = u_π here (BatchNorm batch statistics do not depend on the order).
- Pairing: the released loaders give u_a[i] and u_b[i] the same image under two random crops, the
  same pairing every epoch (the authors meant different images); the default here is a random
  partner image. ``released_pairing: true`` pastes from another random weak view of the same image
  (``unlabeled.second``, π = identity), and the targets inside the boxes come from fk of that view.
- f2's supervised loss is plain CE; f1's is whatever answers ``supervised_loss`` (``ohem``). The
  released Cityscapes configs use OHEM for both networks.
- f2's auxiliary head (``model.aux_head``) gets no loss; the released networks have none.
- Gradient scale: the released code divides each loss by the number of GPUs W inside the graph;
  the paper recipes use the equivalent single-process lr and weight decay (derived in
  recipes/paper/cps_voc_classic.yaml).
- Only f1 is evaluated, as released; ``evaluate_f2: true`` evaluates f2 too (as "f2").
- Initialisation: f1 and f2 start from the recipe's encoder weights and smp's head initialisation
  (He-uniform decoder, Xavier-uniform classifier with bias 0) drawn with their own seeds;
  ``head_init: released`` re-draws every convolution outside the encoder of both networks as
  TorchSemiSeg does (He-normal, fan in, ReLU gain √2; biases PyTorch's default U(±1/√fan_in);
  BatchNorm weight 1, bias 0), f1 from the recipe's seed and f2 from ``f2_seed``. The two rules
  give the decoder the same variance, the 256 → C classifier 2/256 instead of 2/(256 + C).
- Data order: the released plain-CPS unlabeled loader never calls ``set_epoch``, so its images come
  in the same order every epoch (new augmentation each time); ssseg reshuffles every epoch (the
  sampler is the core's). Every image is still seen once per epoch; only the batch composition,
  and so the BatchNorm statistics each image meets, repeats there.
- Crop padding: the released crop pads the image with 0 after normalisation (the mean colour;
  ``data.pad_color: imagenet_mean`` gives 123, 116, 103 of 123.7, 116.3, 103.5) on both sides of
  the image by half, ssseg on the bottom and right.
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssseg.api import (AugmentationPlan, BuildContext, CutMix, FeatureRequest, LabeledBatch, LossTerm, Plugin, Run,
                       StepContext, StudentOutputs, UnlabeledBatch, UserError, View, ViewInput,
                       hookimpl)
from ssseg.augment import box_masks, mix, mix_from

F2 = "cps_f2"  # the name of f2 in run.modules / ctx.modules
PLAIN, MIXED = "u", "mix"  # the student's (f1's) unlabeled view, without and with CutMix


def cps_box_fractions(batch_size: int, generator: torch.Generator, n_boxes: int = 3,
                      area: tuple[float, float] = (0.25, 0.5)) -> tuple[Tensor, Tensor, Tensor]:
    """The draws of the CPS boxes, float64 on ``generator``'s device: side fractions (h, w)
    ``[B, n, 2]`` with a ~ U(area), v ~ U(0, 1), h = a^v·√(1/n), w = a^(1−v)·√(1/n); corner draws
    t ~ U(0, 1) ``[B, n, 2]`` (a corner is round((size − side)·t)); and the areas a ``[B, n]``."""
    def uniform(*shape):
        return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64)

    a = area[0] + (area[1] - area[0]) * uniform(batch_size, n_boxes)
    v = uniform(batch_size, n_boxes)
    h = torch.where(a > 0, a.pow(v), 0.0)  # released: exp(v·log a), and no box where a = 0
    w = torch.where(a > 0, a / h, 0.0)
    sides = torch.stack([h, w], -1) * (1.0 / n_boxes) ** 0.5
    return sides, uniform(batch_size, n_boxes, 2), a


def cps_boxes(batch_size: int, size: tuple[int, int], generator: torch.Generator, n_boxes: int = 3,
              area: tuple[float, float] = (0.25, 0.5)) -> Tensor:
    """CPS CutMix masks ``[B, H, W]`` (bool, true = take the partner's pixel): ``n_boxes`` boxes per
    image, drawn by :func:`cps_box_fractions`, inside the crop, each toggling its region (XOR)."""
    sides, corner, _ = cps_box_fractions(batch_size, generator, n_boxes, area)
    extent = torch.tensor(size, dtype=torch.float64, device=sides.device)
    pixels = torch.round(sides * extent)                       # [B, n, 2] box height, width
    top_left = torch.round((extent - pixels) * corner)         # inside: 0 ≤ corner ≤ size − side
    pixels, top_left = pixels.long(), top_left.long()
    mask = torch.zeros(batch_size, *size, dtype=torch.bool, device=sides.device)
    for k in range(n_boxes):
        mask ^= box_masks(top_left[:, k, 0], top_left[:, k, 1], pixels[:, k, 0], pixels[:, k, 1], size)
    return mask


def random_cycle(batch_size: int, generator: torch.Generator) -> Tensor:
    """A random permutation π ``[B]`` that is one cycle through the batch: π(i) ≠ i for B ≥ 2."""
    order = torch.randperm(batch_size, generator=generator, device=generator.device)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)  # order[k] receives from order[k + 1]
    return partner


@torch.no_grad()
def released_head_init(model: nn.Module, generator: torch.Generator) -> None:
    """TorchSemiSeg's ``init_weight`` on everything of an ssseg model outside its encoder: every
    convolution's weight He-normal (fan in, gain √2) and its bias, if any, U(±1/√fan_in)
    (PyTorch's default, which the released code leaves); every BatchNorm weight 1, bias 0. Draws
    on the CPU from ``generator``, module by module in registration order."""
    encoder = {id(m) for m in model.net.encoder.modules()}
    for module in model.modules():
        if id(module) in encoder:
            continue
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            weight = torch.empty(module.weight.shape).normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
            module.weight.copy_(weight)
            if module.bias is not None:
                bound = fan_in ** -0.5
                module.bias.copy_(torch.empty(module.bias.shape).uniform_(-bound, bound, generator=generator))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


def cross_supervision(z1: Tensor, z2: Tensor, y1: Tensor, y2: Tensor) -> Tensor:
    """L_cps = CE(z1, Y2) + CE(z2, Y1), each a mean over every pixel."""
    return F.cross_entropy(z1, y2) + F.cross_entropy(z2, y1)


class CPS(Plugin):
    """Cross pseudo supervision between the student f1 and a second network f2 (``cps_f2``)."""

    name = "cps"
    requires_hookspec = 5  # validate, build_modules(build)

    @attrs.frozen
    class Config:
        """``cutmix``: the CPS + CutMix variant. ``f2_seed``: f2's initialisation seed (default:
        the recipe's seed + 1). ``released_pairing``: with CutMix, the partner is another weak view
        of the image itself (see the module docstring). ``evaluate_f2``: evaluate f2 beside f1.
        ``head_init``: ``smp`` (the model's own) or ``released`` (:func:`released_head_init` on
        f1 and f2)."""

        cutmix: bool = False
        f2_seed: int | None = None
        released_pairing: bool = False
        evaluate_f2: bool = False
        head_init: Literal["smp", "released"] = "smp"

    @property
    def view_name(self) -> str:
        """The student's unlabeled view: "u", or "mix" with CutMix."""
        return MIXED if self.config.cutmix else PLAIN

    # -- build -------------------------------------------------------------------------------

    @hookimpl
    def pseudo_label_source(self) -> str:
        """No teacher: f1 and f2 make each other's targets."""
        return "none"

    @hookimpl
    def validate(self, recipe) -> None:
        """f1 and f2 must be weighted alike: ``unsup.supervised_weight`` scales only f1's L_x."""
        if recipe.unsup.supervised_weight != 1:
            raise UserError(f"plugins.{self.recipe_key or self.name}: needs unsup.supervised_weight: 1 "
                            f"(got {recipe.unsup.supervised_weight}); it weights only f1's supervised "
                            "loss, f2's is added as it is")

    @hookimpl
    def build_modules(self, build: BuildContext) -> dict[str, nn.Module]:
        """f2: the recipe's model with its own initialisation (seed ``f2_seed`` or seed + 1); with
        ``head_init: released``, f1's and f2's heads re-drawn (f1 from the recipe's seed)."""
        seed = self.config.f2_seed if self.config.f2_seed is not None else build.recipe.seed + 1
        f2 = build.new_model(seed)
        if self.config.head_init == "released":
            released_head_init(build.student, torch.Generator().manual_seed(build.recipe.seed))
            released_head_init(f2, torch.Generator().manual_seed(seed))
        return {F2: f2}

    @hookimpl
    def request_features(self) -> FeatureRequest | None:
        """The released pairing: a second weak view of every unlabeled image (u_b)."""
        c = self.config
        return FeatureRequest(second_view=True) if c.cutmix and c.released_pairing else None

    # -- the step ----------------------------------------------------------------------------

    @hookimpl
    def plan_views(self) -> list[View]:
        """f1's unlabeled forward: u ("u") or u_mix ("mix"), coefficient 0 (L_cps is an extra term)."""
        return [View(self.view_name, coef=0.0)]

    @hookimpl
    def schedule_augmentation(self, ctx: StepContext, view: View,
                              unlabeled: UnlabeledBatch) -> AugmentationPlan | None:
        """With CutMix: M from :func:`cps_boxes` and π (a random cycle; with ``released_pairing``
        the identity into the second weak view), per-sample draws from ``ctx.generator``. Plain
        CPS: u unchanged."""
        c = self.config
        if not c.cutmix:
            return None
        b, _, h, w = unlabeled.image.shape
        box = cps_boxes(b, (h, w), ctx.generator).to(ctx.device)
        if c.released_pairing:
            return AugmentationPlan(mixes=(CutMix(box, torch.arange(b, device=ctx.device), donor="second"),))
        return AugmentationPlan(mixes=(CutMix(box, random_cycle(b, ctx.generator).to(ctx.device)),))

    @hookimpl
    def extra_losses(self, ctx: StepContext, labeled: LabeledBatch, unlabeled: UnlabeledBatch | None,
                     views: dict[str, ViewInput], outputs: StudentOutputs) -> dict[str, Tensor | LossTerm]:
        """f2's one gradient forward on cat(x, u) (or cat(x, u_mix)); L_s's f2 half CE(a2, y) and
        L_cps (×λ by the core)."""
        view = views.get(self.view_name)
        bl = labeled.image.shape[0]
        images = [labeled.image] if view is None else [labeled.image, view.image]
        z2 = ctx.modules[F2](torch.cat(images))  # f2's only gradient forward this step (DDP allows one)
        terms: dict[str, Tensor | LossTerm] = {"cps/sup_f2": ctx.supervised_loss(z2[:bl], labeled.mask)}
        if self.config.cutmix:  # s1, s2 on the mixed unlabeled rows only
            if view is None:
                return terms
            z1, z2 = outputs.views[MIXED], z2[bl:]
            y1, y2 = self.mixed_targets(ctx, unlabeled, view.plan)
        else:  # cat(a1, b1) and cat(a2, b2), labeled and unlabeled rows
            z1 = torch.cat([outputs.labeled] + ([] if view is None else [outputs.views[PLAIN]]))
            y1, y2 = z1.detach().argmax(1), z2.detach().argmax(1)
        terms["cps/cps"] = LossTerm(cross_supervision(z1, z2, y1, y2), times_lambda_u=True)
        ctx.log("cps/agreement", (y1 == y2).float().mean())  # how often Y1 = Y2
        return terms

    @torch.no_grad()
    def mixed_targets(self, ctx: StepContext, unlabeled: UnlabeledBatch,
                      plan: AugmentationPlan) -> tuple[Tensor, Tensor]:
        """Y1, Y2 = argmax fk(u), mixed with the plan's M and π (inside M: argmax fk(u_b) of the
        second view with the released pairing); train mode (BatchNorm batch statistics, as
        released), no gradient. f2 goes through ``ctx.modules`` (DDP syncs buffers; without a
        gradient no backward is prepared)."""
        y1 = ctx.student(unlabeled.image).argmax(1)
        y2 = ctx.modules[F2](unlabeled.image).argmax(1)
        cut, = plan.mixes
        if cut.donor == "view":
            return mix(cut.box, cut.partner, y1, y2)
        u_b = unlabeled.second.image[cut.partner]
        donors = [ctx.student(u_b).argmax(1), ctx.modules[F2](u_b).argmax(1)]
        return mix_from(cut.box, donors, [y1, y2])

    # -- evaluation ---------------------------------------------------------------------------

    @hookimpl
    def eval_models(self, run: Run) -> dict[str, nn.Module] | None:
        """Only f1 (the student) by default, as released; f2 as "f2" with ``evaluate_f2``."""
        return {"f2": run.modules[F2]} if self.config.evaluate_f2 else None
