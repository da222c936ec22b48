"""The hook points of the training loop, in the order the loop calls them.

Every spec states its **kind**, the rule that makes plugin order irrelevant:

- **decision**: at most one plugin of a recipe may implement it (a second is an error at build
  time naming both); the core supplies the default when none does.
- **contribution**: every implementation answers; the answers are combined by a commutative rule
  (product of weights, sum of loss terms, union of named entries).
- **observer**: side effects only; called in recipe order.

Each docstring says when the hook is called, what it receives and what an answer may be; answers
are checked where they enter the core (``ssseg/answers.py``). docs/hooks.md is generated from
these docstrings (``python -m ssseg.hookdoc``). ``HOOKSPEC_VERSION`` is bumped whenever a hook is
added, removed or changes its arguments (``ssseg/compat.py`` says what changed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import pluggy

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ssseg.engine.run import Run
    from ssseg.engine.types import (AugmentationPlan, FeatureRequest, LabeledBatch, LossTerm, Pseudo,
                                    StepContext, StudentOutputs, UnlabeledBatch, View, ViewInput)

PROJECT = "ssseg"
HOOKSPEC_VERSION = 4
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

HookKind = Literal["decision", "contribution", "observer"]
HOOK_KINDS: dict[str, HookKind] = {}


def _kind(kind: HookKind):
    def deco(fn):
        HOOK_KINDS[fn.__name__] = kind
        return hookspec(firstresult=kind == "decision")(fn)

    return deco


# --- build ------------------------------------------------------------------------------------

@_kind("contribution")
def build_modules(run: "Run") -> "dict[str, nn.Module] | None":
    """**contribution**, once at build time, after the data and the student exist and before the
    optimiser (``run.optimizer`` is still None). Return named trainable modules (a second network
    from ``run.new_model(seed)``, a projection head); names must be unique across plugins. The
    core moves them to the device (SyncBatchNorm and channels_last as the recipe says), puts
    their parameters in the optimiser under the student's rules (a module with
    ``param_groups() -> (backbone, head)`` gets the head LR multiplier on ``head`` only; any other
    module is all head), clips their gradients with the student's, wraps them for DDP, saves and
    restores them with the run, and loads them in ``ssseg eval`` / ``predict``. Afterwards use
    ``run.modules[name]``, and ``ctx.modules[name]`` in a training forward."""


@_kind("observer")
def setup(run: "Run") -> None:
    """**observer**, once at build time, after the student, the contributed modules, the data and
    the optimiser exist and before a checkpoint is loaded. Allocate plugin state here (register
    tensors as modules so they follow the device and the checkpoint)."""


@_kind("decision")
def build_teacher(run: "Run", student: "nn.Module") -> "nn.Module | None":
    """**decision**, once after ``setup``. Return the teacher module that makes pseudo-labels
    (for example an EMA copy of ``student``), or None (default) to use the student itself."""


@_kind("decision")
def pseudo_label_source(run: "Run") -> "Literal['teacher', 'student_train', 'none'] | None":
    """**decision**, once after ``build_teacher``. Where the weak view's pseudo-labels come from:
    ``"teacher"`` (default): the teacher (or the online student) in eval mode, before the student
    forward. ``"student_train"``: the released FixMatch/UniMatch behaviour: the weak batch joins
    the student's train-mode forward and its detached logits label each image; a CutMix partner's
    labels come from the eval-mode teacher forward, which still runs first and is what
    ``after_pseudo_label``, ``estimate_hardness`` and ``schedule_augmentation`` see.
    ``"none"``: the strategy makes its own targets (co-training); no teacher forward runs,
    ``pseudo`` is None everywhere, and every view must have coefficient 0."""


@_kind("contribution")
def request_features(run: "Run") -> "FeatureRequest | None":
    """**contribution**, once after ``pseudo_label_source``. Return which intermediate features
    (``"encoder"``, ``"decoder"``) you need from the student's training forward
    (``outputs.features``) and from the teacher's pseudo-labelling forward (``pseudo.features``);
    the core computes the union of all requests, and nothing when none asks."""


# --- each training step ---------------------------------------------------------------------

@_kind("observer")
def before_iteration(ctx: "StepContext") -> None:
    """**observer**, at the start of every step, before any data is used."""


@_kind("observer")
def after_pseudo_label(ctx: "StepContext", unlabeled: "UnlabeledBatch", pseudo: "Pseudo") -> None:
    """**observer**, right after the teacher made pseudo-labels on the weak unlabeled batch in
    eval mode (no gradient; ``pseudo.logits`` holds its logits). Update running statistics of the
    teacher's predictions here, so this step's hooks already use them. Not called when the
    pseudo-label source is ``none``."""


@_kind("decision")
def estimate_hardness(ctx: "StepContext", unlabeled: "UnlabeledBatch",
                      pseudo: "Pseudo") -> "Tensor | None":
    """**decision**, after ``after_pseudo_label`` (no gradient). Return per-instance hardness
    ``[B]`` in [0, 1] (1 = hardest), or None (default). Not called when the pseudo-label source
    is ``none``."""


@_kind("decision")
def plan_views(ctx: "StepContext", hardness: "Tensor | None") -> "list[View] | None":
    """**decision**, after ``estimate_hardness``. Return the unlabeled views the student trains
    on this step (unique names), each with its loss coefficient. Default (None): no views."""


@_kind("decision")
def schedule_augmentation(ctx: "StepContext", view: "View", unlabeled: "UnlabeledBatch",
                          pseudo: "Pseudo | None", hardness: "Tensor | None") -> "AugmentationPlan | None":
    """**decision**, once per image view planned this step, coefficient 0 included. Return the
    per-sample :class:`AugmentationPlan` for ``view`` (photometric ops, blend, CutMix boxes and
    partners); None (default) trains on the weak view unchanged. The core applies the plan to the
    image and to the pseudo-labels (labels, confidences, logits, validity)."""


@_kind("decision")
def supervised_loss(ctx: "StepContext", logits: "Tensor", target: "Tensor") -> "Tensor | None":
    """**decision**, after the student forward, for the labeled ``logits`` ``[B,C,H,W]`` and, with
    ``model.aux_head``, again for the auxiliary head's logits. Return the scalar loss against
    ``target`` ``[B,H,W]``. Default: cross-entropy ignoring ``ctx.ignore_index``."""


@_kind("contribution")
def weight_loss(ctx: "StepContext", view: "View", pseudo: "Pseudo", hardness: "Tensor | None",
                view_input: "ViewInput") -> "Tensor | None":
    """**contribution**, once per view after the student forward, coefficient 0 included, with
    that view's (mixed) pseudo-labels ``pseudo`` and its :class:`ViewInput`. Not called when the
    pseudo-label source is ``none``. Return weights ``[B]`` (per instance) or ``[B,H,W]`` (per
    pixel), or None. The core multiplies all answers; the view loss is
    Σ weight·valid·CE(logits, labels) / Σ valid, added to L_u with the view's coefficient."""


@_kind("contribution")
def extra_losses(ctx: "StepContext", labeled: "LabeledBatch", unlabeled: "UnlabeledBatch | None",
                 pseudo: "Pseudo | None", hardness: "Tensor | None", views: "dict[str, ViewInput]",
                 outputs: "StudentOutputs") -> "dict[str, Tensor | LossTerm] | None":
    """**contribution**, after the view losses, with the labeled batch, the weak unlabeled batch
    and its pseudo-labels, every view's :class:`ViewInput` by name and the student's outputs.
    Return named scalar loss terms (names unique across plugins): a tensor is added to the total
    as it is, a :class:`LossTerm` with ``times_lambda_u`` is multiplied by λ_u first."""


@_kind("decision")
def unsup_weight(ctx: "StepContext") -> "float | None":
    """**decision**, before the total loss is formed. Return λ_u for this step (a ramp-up);
    default: the recipe's ``unsup.weight``. The total is
    w_x·(L_x + aux) + λ_u·(L_u + Σ LossTerm(times_lambda_u)) + Σ other extra terms."""


@_kind("observer")
def after_backward(ctx: "StepContext") -> None:
    """**observer**, after ``backward()`` and before gradient clipping and the optimiser step:
    the gradients of the student and the contributed modules are in ``.grad`` (unscaled, also with
    fp16). Not called for a step dropped as non-finite."""


@_kind("observer")
def after_optimizer_step(ctx: "StepContext") -> None:
    """**observer**, right after the optimiser and LR-schedule step (update an EMA teacher).
    Not called for a step dropped as non-finite."""


@_kind("observer")
def after_iteration(ctx: "StepContext", logs: "dict[str, float]") -> None:
    """**observer**, at the end of every step that reached the optimiser, with that step's scalar
    logs. A step dropped as non-finite (``run.on_nonfinite: skip``) returns before it."""


# --- evaluation ---------------------------------------------------------------------------

@_kind("contribution")
def eval_models(run: "Run") -> "dict[str, nn.Module] | None":
    """**contribution**, at each evaluation. Return named modules to evaluate beside the
    student (for example ``{"teacher": ema}``); names must be unique across plugins."""


@_kind("observer")
def after_eval(run: "Run", metrics: "dict[str, Any]", models: "dict[str, nn.Module]") -> None:
    """**observer**, after each evaluation with ``{"iteration", "<model>/miou", ...}`` and the
    evaluated ``models`` by name (the student and every ``eval_models`` answer), for example to
    draw their predictions."""
