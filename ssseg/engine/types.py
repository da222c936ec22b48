"""The values that travel through the hooks: step context, batches, pseudo-labels, views, plans,
the student's outputs and features, and loss terms. Every field documented here is public: a
plugin may read it; fields of frozen classes cannot be changed (build a new value instead)."""

from __future__ import annotations

from typing import Callable, Literal

import attrs
import torch
from torch import Tensor, nn

FEATURE_NAMES = ("encoder", "decoder")
PSEUDO_LABEL_SOURCES = ("teacher", "student_train", "none")
GROUND_TRUTH_LOGIT = 40.0  # softmax(40·one-hot) is the one-hot vector in float32 for any C < 10^9


@attrs.define
class StepContext:
    """What every step hook receives as ``ctx``.

    ``iteration`` (0-based, the step being taken), ``max_iters``, ``epoch``, ``iters_per_epoch``;
    ``device``, ``rank``, ``world_size``. ``generator`` is per rank (per-sample randomness);
    ``shared_generator`` is seeded alike on every rank and must be used for random choices that
    change control flow (fire CutMix?). ``student`` is the student :class:`SegModel` (not wrapped);
    ``teacher`` is the module that makes pseudo-labels: the EMA teacher, or the student itself for
    online strategies. ``modules`` holds the trainable modules plugins contributed with
    ``build_modules``, ready to call in a training forward (wrapped for DDP when distributed, so
    their gradients are synchronised); their plain versions are ``run.modules``. ``num_classes``,
    ``ignore_index``; ``log(name, value)`` records a scalar for this step into ``logs``.
    ``supervised_loss(logits, target)``: the recipe's supervised loss (the ``supervised_loss``
    decision, else cross-entropy ignoring ``ignore_index``), for a plugin that trains a second
    network on the labeled batch, so a plugin answering ``supervised_loss`` (OHEM) reaches it too.
    """

    iteration: int
    max_iters: int
    epoch: int
    iters_per_epoch: int
    device: torch.device
    rank: int
    world_size: int
    generator: torch.Generator
    shared_generator: torch.Generator
    student: nn.Module
    teacher: nn.Module
    num_classes: int
    ignore_index: int
    modules: dict[str, nn.Module] = attrs.field(factory=dict)
    logs: dict[str, float] = attrs.field(factory=dict)
    supervised_loss: Callable[[Tensor, Tensor], Tensor] | None = None

    def log(self, name: str, value: float | Tensor) -> None:
        """Record a scalar for this step (written to metrics.jsonl every ``run.log_every``)."""
        self.logs[name] = float(value)


@attrs.frozen
class LabeledBatch:
    """The labeled batch: ``image`` ``[B,3,H,W]`` in [0, 1] and ``mask`` ``[B,H,W]`` class indices
    (``ignore_index`` on padding and unlabeled pixels)."""

    image: Tensor
    mask: Tensor


@attrs.frozen
class UnlabeledBatch:
    """The weak unlabeled batch: images ``[B,3,H,W]`` in [0, 1] and ``valid`` ``[B,H,W]``.
    ``second``: when a plugin asked for it (``FeatureRequest.second_view``), another weak view of
    the same images in the same order (the same files under an independent rescale, crop and flip,
    as the released UniMatch and CPS loaders pair them), itself an :class:`UnlabeledBatch`; else
    None."""

    image: Tensor
    valid: Tensor
    second: "UnlabeledBatch | None" = None


@attrs.frozen
class Features:
    """Intermediate features of one forward, for the rows of one part: ``encoder``, the encoder's
    stages (shallow to deep, each ``[B,C_k,H_k,W_k]``, the input included as smp returns it), and
    ``decoder``, the decoder's output before the classifier ``[B,D,h,w]``; None where not asked
    for (``request_features``). Features cover the input padded to the model's stride."""

    encoder: tuple[Tensor, ...] | None = None
    decoder: Tensor | None = None


@attrs.frozen
class FeatureRequest:
    """A plugin's answer to ``request_features``: which features (``"encoder"``, ``"decoder"``) it
    needs from the student's training forward (``student``) and from the teacher's
    pseudo-labelling forward (``teacher``); ``student_on_weak``: also put the weak batch through
    the student's training forward (``outputs.weak`` and ``outputs.features["weak"]``);
    ``second_view``: load a second weak view of every unlabeled image (``unlabeled.second``), for
    CutMix partners that are another crop of the same image (``CutMix(donor="second")``)."""

    student: tuple[str, ...] = ()
    teacher: tuple[str, ...] = ()
    student_on_weak: bool = False
    second_view: bool = False


@attrs.frozen
class Pseudo:
    """Pseudo-labels of one view: ``labels`` (argmax) and ``conf`` (max softmax) ``[B,H,W]``,
    ``valid`` ``[B,H,W]`` (False on padding), and the logits ``[B,C,H,W]`` they came from, mixed
    like the labels when the view was CutMixed (so ``probs`` are the mixed soft targets).
    ``features``: the teacher forward's features when a plugin asked for them (weak view only).
    ``ignored`` ``[B,H,W]``: pixels whose target is ground truth marked ``ignore_index`` (pasted
    from the labeled batch); they never enter a loss, under any ``unsup.normalize`` (padding,
    also invalid, does enter ``pixels``); None: no such pixel. The core always sets ``logits``;
    None only in a Pseudo built by hand (a test)."""

    labels: Tensor
    conf: Tensor
    valid: Tensor
    logits: Tensor | None = None
    features: Features | None = None
    ignored: Tensor | None = None

    @property
    def probs(self) -> Tensor:
        """softmax(logits) ``[B,C,H,W]``: the soft targets."""
        return self.logits.softmax(1)

    @classmethod
    def from_logits(cls, logits: Tensor, valid: Tensor, features: Features | None = None) -> "Pseudo":
        """Hard labels and confidences of ``logits`` (no gradient flows through them)."""
        logits = logits.detach()
        conf, labels = logits.softmax(1).max(1)
        return cls(labels=labels, conf=conf, valid=valid, logits=logits, features=features)

    @classmethod
    def from_ground_truth(cls, mask: Tensor, num_classes: int, ignore_index: int,
                          dtype: torch.dtype = torch.float32) -> "Pseudo":
        """Targets that are the ground truth ``mask`` ``[B,H,W]``: labels = mask (0 where
        ignored), confidence 1, valid where the mask is not ``ignore_index``, and logits
        ``GROUND_TRUTH_LOGIT``·one-hot, whose softmax is the one-hot target in float32; the
        ignored pixels are also ``ignored``."""
        valid = mask != ignore_index
        labels = mask.masked_fill(~valid, 0)
        logits = torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(dtype) * GROUND_TRUTH_LOGIT
        return cls(labels=labels, conf=torch.ones(mask.shape, dtype=dtype, device=mask.device), valid=valid,
                   logits=logits, ignored=~valid)


@attrs.frozen
class View:
    """One view the student trains on.

    ``kind="image"``: an augmented copy of its source batch, planned by ``schedule_augmentation``.
    ``kind="feature"``: the decoder applied to Dropout2d(``dropout``) of the weak batch's encoder
    features (UniMatch's feature perturbation). ``source``: the batch the view is built from:
    ``"unlabeled"`` (the weak unlabeled batch; targets: its pseudo-labels) or ``"labeled"`` (the
    labeled batch; targets: the ground truth, so the view has a loss even with the pseudo-label
    source ``none``, and ``weight_loss`` is not asked for it). ``coef`` multiplies this view's
    cross-entropy loss; a view of coefficient 0 is forwarded (BatchNorm statistics, logits for
    ``extra_losses``) but adds no cross-entropy term.
    """

    name: str
    coef: float = 1.0
    kind: Literal["image", "feature"] = "image"
    dropout: float = 0.5
    source: Literal["unlabeled", "labeled"] = "unlabeled"


@attrs.frozen
class CutMix:
    """One CutMix of an :class:`AugmentationPlan`: inside ``box`` ``[B,H,W]`` (bool) of image i,
    the image and its targets (labels, confidences, logits, validity) come from image
    ``partner[i]`` (``[B]``, long) of the ``donor`` batch:

    - ``"view"``: this view as it stands before this mix (after the photometric ops, the blend
      and the earlier mixes), with its targets so far;
    - ``"second"``: the second weak view ``unlabeled.second`` after ``donor_photometric`` (None:
      unchanged), with the pseudo-labels the teacher gives it in eval mode (needs
      ``FeatureRequest(second_view=True)``);
    - ``"labeled"``: the labeled batch after ``donor_photometric`` (``partner`` indexes it); the
      pasted targets are the ground truth: labels = mask, confidence 1, logits one-hot, valid
      where the mask is not ``ignore_index``.
    """

    box: Tensor
    partner: Tensor
    donor: Literal["view", "second", "labeled"] = "view"
    donor_photometric: Callable[[Tensor], Tensor] | None = None


@attrs.frozen
class AugmentationPlan:
    """How to build one image view from its source batch (the weak unlabeled batch, or the
    labeled batch for a view of ``source="labeled"``), applied by the core in this order:

    1. ``photometric(x) -> strong`` (batched, per-sample parameters already drawn);
    2. ``blend`` ``[B]``: x = blend·strong + (1 − blend)·x (None: x = strong);
    3. each :class:`CutMix` of ``mixes`` in order, on the image and its targets (pseudo-labels,
       confidences, logits, validity) alike.
    """

    photometric: Callable[[Tensor], Tensor] | None = None
    blend: Tensor | None = None
    mixes: tuple[CutMix, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class ViewInput:
    """One view as the student sees it: the ``view``, its input ``image`` ``[B,3,H,W]`` (None for
    a feature view), the ``plan`` that built it (None: the source image unchanged), its targets
    ``pseudo``, mixed by the plan's CutMixes (the ground truth for a labeled view; None when the
    pseudo-label source is ``none`` and the view is unlabeled), and ``weight`` ``[B,H,W]``, the
    product of the ``weight_loss`` answers for it (all ones when no plugin answers; set in the
    ``losses`` phase, None before it and for a labeled view). A plugin computing its own loss on a
    view multiplies it by ``weight``, so reweighting plugins reach that loss too."""

    view: View
    image: Tensor | None
    plan: AugmentationPlan | None
    pseudo: Pseudo | None
    weight: Tensor | None = None


@attrs.frozen
class StudentOutputs:
    """The student's train-mode outputs of one step: logits of the labeled images ``labeled``
    ``[Bl,C,H,W]``, each view's logits by name in ``views``, ``weak``: the logits of the weak
    batch when it was in the forward (a feature view, the ``student_train`` pseudo-label source,
    or ``FeatureRequest.student_on_weak``; else None), ``aux`` (the auxiliary head's logits of the
    labeled images) with ``model.aux_head``, and ``features`` by part (``"labeled"``, ``"weak"``
    when forwarded, and each view's name) when a plugin asked for them (``request_features``).
    ``heads``: the ``forward_heads`` answers by name (computed once, with gradient), from the
    ``relabel`` phase on; empty before it and when no plugin answers."""

    labeled: Tensor
    views: dict[str, Tensor]
    weak: Tensor | None = None
    aux: Tensor | None = None
    features: dict[str, Features] = attrs.field(factory=dict)
    heads: dict[str, Tensor] = attrs.field(factory=dict)


@attrs.frozen
class LossTerm:
    """An ``extra_losses`` entry that says how it enters the total: ``value`` a scalar tensor;
    with ``times_lambda_u`` it is multiplied by this step's λ_u (``unsup_weight``) like the view
    losses, otherwise added as it is (a plain tensor answer is added as it is)."""

    value: Tensor
    times_lambda_u: bool = False


@attrs.frozen
class EvalModel:
    """An ``eval_models`` answer that says more than the module: ``headline`` marks the model
    ``best.pt`` follows (at most one per recipe; default: the student)."""

    module: nn.Module
    headline: bool = False
