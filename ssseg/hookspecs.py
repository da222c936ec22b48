"""The hook points of the training loop, in the order the loop calls them.

Every spec states its **kind**, the rule that makes plugin order irrelevant:

- **decision**: at most one plugin of a recipe may implement it (a second is an error at build
  time naming both); the core supplies the default when none does.
- **contribution**: every implementation answers; the answers are combined by a commutative rule
  (product of weights, sum of loss terms, union of named entries).
- **observer**: side effects only; called in recipe order.

``HOOKSPEC_VERSION`` is bumped whenever a hook is added, removed or changes its arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import pluggy

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ssseg.engine.run import Run
    from ssseg.engine.types import (AugmentationPlan, Pseudo, StepContext, StudentOutputs,
                                    UnlabeledBatch, View)

PROJECT = "ssseg"
HOOKSPEC_VERSION = 2
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Kind = Literal["decision", "contribution", "observer"]
KINDS: dict[str, Kind] = {}


def _kind(kind: Kind):
    def deco(fn):
        KINDS[fn.__name__] = kind
        return hookspec(firstresult=kind == "decision")(fn)

    return deco


# --- build ------------------------------------------------------------------------------------

@_kind("observer")
def setup(run: "Run") -> None:
    """**observer**, once at build time, after the student, data and optimiser exist and before
    a checkpoint is loaded. Allocate plugin state here (register tensors as modules so they
    follow the device and the checkpoint)."""


@_kind("decision")
def build_teacher(run: "Run", student: "nn.Module") -> "nn.Module | None":
    """**decision**, once after ``setup``. Return the teacher module that makes pseudo-labels
    (for example an EMA copy of ``student``), or None (default) to use the student itself."""


# --- each training step ---------------------------------------------------------------------

@_kind("observer")
def before_iteration(ctx: "StepContext") -> None:
    """**observer**, at the start of every step, before any data is used."""


@_kind("observer")
def after_pseudo_label(ctx: "StepContext", unlabeled: "UnlabeledBatch", pseudo: "Pseudo") -> None:
    """**observer**, right after the teacher made pseudo-labels on the weak unlabeled batch (no
    gradient; ``pseudo.logits`` holds its logits). Update running statistics of the teacher's
    predictions here, so this step's hooks already use them."""


@_kind("decision")
def estimate_hardness(ctx: "StepContext", unlabeled: "UnlabeledBatch",
                      pseudo: "Pseudo") -> "Tensor | None":
    """**decision**, after the teacher made pseudo-labels on the weak unlabeled batch (no
    gradient). Return per-instance hardness ``[B]`` in [0, 1] (1 = hardest), or None (default)."""


@_kind("decision")
def plan_views(ctx: "StepContext", hardness: "Tensor | None") -> "list[View] | None":
    """**decision**, after ``estimate_hardness``. Return the unlabeled views the student trains
    on this step, each with its loss coefficient. Default (None): no unlabeled views."""


@_kind("decision")
def schedule_augmentation(ctx: "StepContext", view: "View", unlabeled: "UnlabeledBatch",
                          pseudo: "Pseudo", hardness: "Tensor | None") -> "AugmentationPlan | None":
    """**decision**, once per image view planned this step. Return the per-sample
    :class:`AugmentationPlan` for ``view`` (photometric ops, blend, CutMix boxes and partners);
    None (default) trains on the weak view unchanged. The core applies the plan."""


@_kind("decision")
def supervised_loss(ctx: "StepContext", logits: "Tensor", target: "Tensor") -> "Tensor | None":
    """**decision**, after the student forward, for the labeled ``logits`` ``[B,C,H,W]`` and, with
    ``model.aux_head``, again for the auxiliary head's logits. Return the scalar loss against
    ``target`` ``[B,H,W]``. Default: cross-entropy ignoring 255."""


@_kind("contribution")
def weight_loss(ctx: "StepContext", view: "View", pseudo: "Pseudo",
                hardness: "Tensor | None") -> "Tensor | None":
    """**contribution**, once per view, with that view's (mixed) pseudo-labels. Return weights
    ``[B]`` (per instance) or ``[B,H,W]`` (per pixel), or None. The core multiplies all answers;
    the view loss is Σ weight·valid·CE(logits, labels) / Σ valid."""


@_kind("contribution")
def extra_losses(ctx: "StepContext", unlabeled: "UnlabeledBatch | None", pseudo: "Pseudo | None",
                 outputs: "StudentOutputs") -> "dict[str, Tensor] | None":
    """**contribution**, after the view losses. Return named scalar loss terms to add to the
    total; names must be unique across plugins; the core sums them."""


@_kind("decision")
def unsup_weight(ctx: "StepContext") -> "float | None":
    """**decision**, before the total loss is formed. Return λ_u for this step (a ramp-up);
    default: the recipe's ``unsup.weight``."""


@_kind("observer")
def after_optimizer_step(ctx: "StepContext") -> None:
    """**observer**, right after the optimiser and LR-schedule step (update an EMA teacher)."""


@_kind("observer")
def after_iteration(ctx: "StepContext", logs: "dict[str, float]") -> None:
    """**observer**, at the end of every step with that step's scalar logs."""


# --- evaluation ---------------------------------------------------------------------------

@_kind("contribution")
def eval_models(run: "Run") -> "dict[str, nn.Module] | None":
    """**contribution**, at each evaluation. Return named modules to evaluate beside the
    student (for example ``{"teacher": ema}``); names must be unique across plugins."""


@_kind("observer")
def after_eval(run: "Run", metrics: "dict[str, Any]") -> None:
    """**observer**, after each evaluation with ``{"iteration", "<model>/miou", ...}``."""
