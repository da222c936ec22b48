"""The training step, declared once: its phases in order and, for each hook, its kind, arguments,
combine rule, answer check and gradient mode.

Everything else reads this table: the pluggy hook specs (:mod:`ssseg.hookspecs`), the registry's
rules and answer checks (:mod:`ssseg.plugin_manager`), the step runner's phase order
(:mod:`ssseg.engine.step`), ``ssseg explain``, the contract kit's hook sets and docs/hooks.md
(:mod:`ssseg.hookdoc`). One independent golden test (tests/core/test_step_table.py) restates the
order, so a change to it is always deliberate.

Kinds, the rule that makes plugin order irrelevant:

- **decision**: at most one plugin of a recipe may implement it (a second is an error at build
  time naming both); the core supplies the default when none does.
- **contribution**: every implementation answers; the answers are combined by the hook's
  commutative rule (:data:`COMBINE_RULES`).
- **observer**: side effects only; called in recipe order.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import attrs
import torch

from ssseg import answers
from ssseg.engine.types import FeatureRequest
from ssseg.errors import UserError

HOOKSPEC_VERSION = 7

Kind = Literal["decision", "contribution", "observer"]
Grad = Literal["no_grad", "enabled"]
# why a recipe never calls a hook: check_recipe refuses a plugin implementing a hook of the recipe
# that is never called (compose or refuse), with this reason
NEVER_CALLED: dict[str, str] = {
    "no_unlabeled": "the recipe has no unlabeled batch (data.batch_unlabeled: 0)",
    "source_none": "the pseudo-label source is 'none' (no pseudo-labels are made)",
    "no_views": "no plugin of the recipe plans views (plan_views or refine_views)",
    "no_stages": "the recipe declares no stages",
}


def _first(hook: str, answers_: list[Any], kwargs: dict[str, Any]) -> Any:
    return answers_  # pluggy's firstresult already gave the one answer (or None)


def _product(hook: str, answers_: list[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    like = kwargs["pseudo"].conf
    weight = torch.ones_like(like, dtype=torch.float32)
    for w in answers_:
        if w is not None:
            weight = weight * (w.view(-1, 1, 1) if w.dim() == 1 else w)
    return weight


def named_union(hook: str, answers_: list[Any], kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Union of named contributions; a name given by two plugins is an error."""
    merged: dict[str, Any] = {}
    for answer in answers_:
        for name, value in (answer or {}).items():
            if name in merged:
                raise UserError(f"two plugins answer {hook} with the same name {name!r}")
            merged[name] = value
    return merged


def _feature_union(hook: str, answers_: list[Any], kwargs: dict[str, Any]) -> FeatureRequest:
    requests = [r for r in answers_ if r is not None]
    return FeatureRequest(student=tuple(sorted({f for r in requests for f in r.student})),
                          teacher=tuple(sorted({f for r in requests for f in r.teacher})),
                          student_on_weak=any(r.student_on_weak for r in requests),
                          second_view=any(r.second_view for r in requests))


def _iteration_union(hook: str, answers_: list[Any], kwargs: dict[str, Any]) -> tuple[int, ...]:
    return tuple(sorted({int(i) for answer in answers_ if answer is not None for i in answer}))


def _none(hook: str, answers_: list[Any], kwargs: dict[str, Any]) -> None:
    return None


@attrs.frozen
class Combine:
    """How the answers of one hook become the value the step uses: ``name``, what it means, and
    ``apply(hook, answers, kwargs)``."""

    name: str
    meaning: str
    apply: Callable[[str, list[Any], dict[str, Any]], Any]


FIRST = Combine("first", "the one answer, or the core's default when none", _first)
PRODUCT = Combine("product", "the product of every answer ([B] broadcast over pixels); 1 when none",
                  _product)
NAMED_UNION = Combine("named union", "the union of every answer's names (a name given twice is an "
                      "error)", named_union)
FEATURE_UNION = Combine("feature union", "the union of every request (features, flags)", _feature_union)
NONE = Combine("none", "side effects only; answers are ignored", _none)
ITERATION_UNION = Combine("iteration union", "the sorted union of every answer's iterations",
                          _iteration_union)
COMBINE_RULES = (FIRST, PRODUCT, NAMED_UNION, FEATURE_UNION, NONE, ITERATION_UNION)


@attrs.frozen
class Arg:
    """A hook argument: its ``name`` and the type plugins receive (as written in docs)."""

    name: str
    type: str


@attrs.frozen
class Hook:
    """One hook point. ``args``: what it is called with; ``returns``: what an answer may be;
    ``combine``: how answers become one value; ``check``: why an answer is invalid (None: any);
    ``grad``: ``no_grad`` runs every implementation under :func:`torch.no_grad`; ``unlabeled``:
    called only for a step with an unlabeled batch; ``never_called``: the recipe conditions
    (:data:`NEVER_CALLED`) under which the hook is never called or its answer never used;
    ``answer_arg``: the argument of later hooks that carries this decision's answer (a plugin
    answering it is refused when no plugin's hook takes that argument); ``doc``: when it is
    called and what for."""

    name: str
    kind: Kind
    args: tuple[Arg, ...]
    returns: str
    doc: str
    check: Callable[[Any, dict], str | None] | None = None
    grad: Grad = "enabled"
    unlabeled: bool = False
    never_called: tuple[str, ...] = ()
    answer_arg: str | None = None

    @property
    def combine(self) -> Combine:
        """The combine rule: decisions take the first answer, observers none; a contribution
        names its rule in :data:`CONTRIBUTION_RULES`."""
        if self.kind == "decision":
            return FIRST
        if self.kind == "observer":
            return NONE
        return CONTRIBUTION_RULES[self.name]

    @property
    def arg_names(self) -> tuple[str, ...]:
        """The argument names, in order."""
        return tuple(a.name for a in self.args)


@attrs.frozen
class Phase:
    """A phase of a run, in order. ``runner``: what executes it (``check``: the recipe check,
    ``build``: the run builder, ``step``: the step runner, ``evaluate``: the evaluator);
    ``autocast``: the step runner runs it at the recipe's precision; ``hooks`` in call order."""

    name: str
    runner: Literal["check", "build", "step", "evaluate", "stage"]
    doc: str
    hooks: tuple[Hook, ...] = ()
    autocast: bool = False


def _a(spec: str) -> tuple[Arg, ...]:
    """Arguments from ``"name: type, name: type"``."""
    return tuple(Arg(*(part.strip() for part in item.split(":", 1))) for item in spec.split(";") if item)


CTX = "ctx: StepContext"
PHASES: tuple[Phase, ...] = (
    Phase("validate", "check", "When a recipe is checked (``ssseg train``, ``eval``, ``explain``, "
          "suites at load, the contract kit), before anything is built.", (
        Hook("pseudo_label_source", "decision", _a("recipe: Recipe"),
             "Literal['teacher', 'student_train', 'none'] | None",
             "Where the weak view's pseudo-labels come from, decided from the recipe: "
             "``\"teacher\"`` (default): the teacher (or the online student) in eval mode, before the "
             "student forward. ``\"student_train\"``: the released FixMatch/UniMatch behaviour: the weak "
             "batch joins the student's train-mode forward and its detached logits label each image "
             "(phase ``relabel``); a CutMix partner's labels come from the eval-mode teacher forward, "
             "which still runs first and is what ``after_pseudo_label``, ``estimate_hardness`` and "
             "``schedule_augmentation`` see. ``\"none\"``: the strategy makes its own targets "
             "(co-training); no teacher forward runs, ``pseudo`` is None everywhere, and every view "
             "must have coefficient 0.", answers.source),
        Hook("validate", "observer", _a("recipe: Recipe; pseudo_label_source: str"), "None",
             "Refuse a recipe this plugin cannot serve by raising ``UserError`` with the key to "
             "change; ``pseudo_label_source`` is the recipe's decision (above, ``\"teacher\"`` when "
             "no plugin takes it). Hooks a plugin needs other plugins to answer are declared "
             "instead (``requires``), and the core checks them."),
    )),
    Phase("build", "build", "Once, when the run is built (``build_run``): the data and the "
          "student exist. Build hooks see a read-only ``BuildContext``; the ``Run`` is made from "
          "their combined answers and does not change afterwards.", (
        Hook("build_modules", "contribution", _a("build: BuildContext"), "dict[str, nn.Module] | None",
             "Return named trainable modules (a second network from ``build.new_model(seed)``, a "
             "projection head); names must be unique across plugins. The core moves them to the "
             "device (SyncBatchNorm and channels_last as the recipe says), puts their parameters in "
             "the optimiser under the student's rules (a module with ``param_groups() -> (backbone, "
             "head)`` gets the head LR multiplier on ``head`` only; any other module is all head), "
             "clips their gradients with the student's, wraps them for DDP, saves and restores them "
             "with the run, and loads them in ``ssseg eval`` / ``predict``. A module whose parameters "
             "some steps leave unused sets ``ddp_find_unused_parameters = True``. Afterwards use "
             "``run.modules[name]``, and ``ctx.modules[name]`` in a training forward.",
             answers.named_modules),
        Hook("build_teacher", "decision", _a("build: BuildContext; student: nn.Module"),
             "nn.Module | None",
             "Return the teacher module that makes pseudo-labels (for example an EMA copy of "
             "``student``), or None (default): the student makes them itself (``run.teacher`` is "
             "then the student).", answers.module, never_called=("no_unlabeled", "source_none")),
        Hook("request_features", "contribution", _a("build: BuildContext"), "FeatureRequest | None",
             "Return which intermediate features (``\"encoder\"``, ``\"decoder\"``) you need from the "
             "student's training forward (``outputs.features``) and from the teacher's "
             "pseudo-labelling forward (``pseudo.features``), and whether the weak batch joins the "
             "student forward or a second weak view is loaded; the core computes the union of all "
             "requests, and nothing when none asks.", answers.features),
        Hook("setup", "observer", _a("run: Run"), "None",
             "Once the ``Run`` exists (student, teacher, modules, optimiser, decisions) and before a "
             "checkpoint is loaded. Allocate plugin state here (register tensors as modules so they "
             "follow the device and the checkpoint)."),
    )),
    Phase("prepare", "step", "Each training step, up to the student forward: the teacher's "
          "pseudo-labels, the hardness, the views and their inputs.", (
        Hook("before_iteration", "observer", _a(CTX), "None",
             "At the start of every step, before any data is used."),
        Hook("after_pseudo_label", "observer", _a(f"{CTX}; unlabeled: UnlabeledBatch; pseudo: Pseudo"),
             "None", "Right after the teacher made pseudo-labels on the weak unlabeled batch in eval "
             "mode (``pseudo.logits`` holds its logits). Update running statistics of the teacher's "
             "predictions here, so this step's hooks already use them. Not called when the "
             "pseudo-label source is ``none``.", grad="no_grad", unlabeled=True,
             never_called=("no_unlabeled", "source_none")),
        Hook("estimate_hardness", "decision", _a(f"{CTX}; unlabeled: UnlabeledBatch; pseudo: Pseudo"),
             "Tensor | None", "Return per-instance hardness ``[B]`` in [0, 1] (1 = hardest), or None "
             "(default). Not called when the pseudo-label source is ``none``; refused when no "
             "plugin's hook takes ``hardness``.",
             answers.per_instance, grad="no_grad", unlabeled=True,
             never_called=("no_unlabeled", "source_none"), answer_arg="hardness"),
        Hook("plan_views", "decision", _a(f"{CTX}; labeled: LabeledBatch; hardness: Tensor | None"),
             "list[View] | None",
             "Return the views the student trains on this step (unique names), each with its loss "
             "coefficient and source batch (``View.source``: the unlabeled batch, or the labeled "
             "one with ground-truth targets); ``labeled`` is this step's labeled batch. Default "
             "(None): no views.", answers.views, grad="no_grad", unlabeled=True,
             never_called=("no_unlabeled",)),
        Hook("refine_views", "decision",
             _a(f"{CTX}; views: list[View]; labeled: LabeledBatch; hardness: Tensor | None"),
             "list[View] | None",
             "Right after ``plan_views``, with the views it planned (``[]`` when no plugin plans "
             "any). Return the views to train on instead (add a view, change a coefficient), or "
             "None (default) to keep them: a plugin refines the strategy's views without restating "
             "them.", answers.views, grad="no_grad", unlabeled=True, never_called=("no_unlabeled",)),
        Hook("schedule_augmentation", "decision",
             _a(f"{CTX}; view: View; labeled: LabeledBatch; unlabeled: UnlabeledBatch; "
                "pseudo: Pseudo | None; hardness: Tensor | None"),
             "AugmentationPlan | None",
             "Once per image view planned this step, coefficient 0 included. Return the per-sample "
             ":class:`AugmentationPlan` for ``view`` (photometric ops, blend, CutMixes from the view, "
             "the second weak view or the labeled batch); None (default) trains on the source batch "
             "unchanged. The core applies the plan to the image and to its targets (labels, "
             "confidences, logits, validity).",
             answers.plan, grad="no_grad", unlabeled=True, never_called=("no_unlabeled", "no_views")),
        Hook("refine_augmentation", "decision",
             _a(f"{CTX}; view: View; plan: AugmentationPlan | None; labeled: LabeledBatch; "
                "unlabeled: UnlabeledBatch; pseudo: Pseudo | None; hardness: Tensor | None"),
             "AugmentationPlan | None",
             "Right after ``schedule_augmentation`` for the same image view, with the ``plan`` it "
             "gave (None when no plugin schedules augmentation). Return the plan to apply instead "
             "(for example the strategy's plan with adaptive photometric ops, or an extra CutMix), or "
             "None (default) to keep it.",
             answers.plan, grad="no_grad", unlabeled=True, never_called=("no_unlabeled", "no_views")),
    ), autocast=True),
    Phase("forward", "step", "One train-mode student forward over the labeled images, the weak "
          "batch when needed and every image view (feature views reuse the weak batch's encoder "
          "pass); then the heads plugins run on its outputs.", (
        Hook("forward_heads", "contribution", _a(f"{CTX}; outputs: StudentOutputs"),
             "dict[str, Tensor] | None",
             "Right after the student's training forward, with its ``outputs`` (the features plugins "
             "asked for included). Return named tensors that your contributed modules "
             "(``ctx.modules``) compute from them, with gradient (a correlation head, a projection "
             "head); names must be unique across plugins. Each head runs once a step, so its "
             "BatchNorm statistics and dropout draws are those of one forward, and its outputs "
             "reach ``relabel`` and ``extra_losses`` as ``outputs.heads[name]``.",
             answers.head_outputs),
    ), autocast=True),
    Phase("relabel", "step", "After the student forward: with the ``student_train`` source each "
          "view's pseudo-labels come from the student's detached train-mode logits of the weak "
          "batch; then ``relabel`` may change them.", (
        Hook("relabel", "decision",
             _a(f"{CTX}; unlabeled: UnlabeledBatch; pseudo: Pseudo; views: dict[str, ViewInput]; "
                "outputs: StudentOutputs"),
             "dict[str, Pseudo] | None",
             "After the student's training forward (``outputs``, with the features plugins asked "
             "for), with the weak batch's pseudo-labels and every view's :class:`ViewInput`. Return "
             "new pseudo-labels for some unlabeled views by name (the shapes of the ones they "
             "replace), for example labels propagated with the student's features; the view losses, "
             "``weight_loss`` and ``extra_losses`` then use them. None (default) keeps them. Not "
             "called when the pseudo-label source is ``none``.", answers.relabelled, grad="no_grad",
             unlabeled=True, never_called=("no_unlabeled", "source_none", "no_views")),
    ), autocast=True),
    Phase("losses", "step", "The loss: supervised, every view's weighted cross-entropy, the extra "
          "terms and λ_u, combined as "
          "w_x·(L_x + a·L_aux) + λ_u·(L_u + Σ LossTerm(times_lambda_u)) + Σ other extra terms, "
          "with w_x = ``unsup.supervised_weight`` and a = ``model.aux_weight``.", (
        Hook("supervised_loss", "decision", _a(f"{CTX}; logits: Tensor; target: Tensor"), "Tensor | None",
             "For the labeled ``logits`` ``[B,C,H,W]`` and, with ``model.aux_head``, again for the "
             "auxiliary head's logits. Return the scalar loss against ``target`` ``[B,H,W]``. Default: "
             "cross-entropy ignoring ``ctx.ignore_index`` (``ssseg.api.cross_entropy``).",
             answers.scalar),
        Hook("weight_loss", "contribution",
             _a(f"{CTX}; view: View; pseudo: Pseudo; hardness: Tensor | None; view_input: ViewInput"),
             "Tensor | None",
             "Once per unlabeled view, coefficient 0 included, with that view's (mixed) "
             "pseudo-labels ``pseudo`` and its :class:`ViewInput`. Not called when the pseudo-label "
             "source is ``none``, nor for a labeled view. Return weights ``[B]`` (per instance) or "
             "``[B,H,W]`` (per pixel), or None. The view loss is Σ weight·valid·CE(logits, labels) / "
             "Σ valid, added to L_u with the view's coefficient; the combined weight is also "
             "``view_input.weight`` in ``extra_losses``, for plugins that compute a view's loss "
             "themselves.", answers.weights, grad="no_grad", unlabeled=True,
             never_called=("no_unlabeled", "source_none", "no_views")),
        Hook("extra_losses", "contribution",
             _a(f"{CTX}; labeled: LabeledBatch; unlabeled: UnlabeledBatch | None; pseudo: Pseudo | None; "
                "hardness: Tensor | None; views: dict[str, ViewInput]; outputs: StudentOutputs"),
             "dict[str, Tensor | LossTerm] | None",
             "After the view losses, with the labeled batch, the weak unlabeled batch and its "
             "pseudo-labels, every view's :class:`ViewInput` by name and the student's outputs. "
             "Return named scalar loss terms (names unique across plugins): a tensor is added to the "
             "total as it is, a :class:`LossTerm` with ``times_lambda_u`` is multiplied by λ_u first.",
             answers.terms),
        Hook("unsup_weight", "decision", _a(CTX), "float | None",
             "Before the total loss is formed. Return λ_u for this step (a ramp-up); default: the "
             "recipe's ``unsup.weight``.", answers.number, grad="no_grad"),
    ), autocast=True),
    Phase("optimize", "step", "Backward, gradient clipping, the poly learning rate and the optimiser "
          "step; a non-finite loss on any rank stops the run or (``run.on_nonfinite: skip``) drops "
          "the step, and then neither hook below is called.", (
        Hook("after_backward", "observer", _a(CTX), "None",
             "After ``backward()`` and before gradient clipping and the optimiser step: the gradients "
             "of the student and the contributed modules are in ``.grad`` (unscaled, also with "
             "fp16)."),
        Hook("after_optimizer_step", "observer", _a(CTX), "None",
             "Right after the optimiser and LR-schedule step (update an EMA teacher: "
             "``ssseg.api.ema_update_``)."),
    )),
    Phase("end", "step", "The step's scalar logs; the iteration advances after this phase (a "
          "dropped step advances it too, without the hook).", (
        Hook("after_iteration", "observer", _a(f"{CTX}; logs: dict[str, float]"), "None",
             "At the end of every step that reached the optimiser, with that step's scalar logs."),
    )),
    Phase("evaluate", "evaluate", "At each evaluation (every ``eval.every`` iterations or "
          "``eval.every_epochs`` epochs, at the end, and in ``ssseg eval``).", (
        Hook("eval_models", "contribution", _a("run: Run"), "dict[str, nn.Module | EvalModel] | None",
             "Also called once before training, so the names and the headline are checked then. "
             "Return named modules to evaluate beside the student (for example ``{\"teacher\": "
             "EvalModel(ema, headline=True)}``); names must be unique across plugins. ``best.pt`` "
             "follows the one model marked ``headline`` (default: the student).",
             answers.eval_models),
        Hook("after_eval", "observer",
             _a("run: Run; metrics: dict[str, Any]; models: dict[str, nn.Module]"), "None",
             "After each evaluation with ``{\"iteration\", \"<model>/miou\", ...}`` and the evaluated "
             "``models`` by name (the student and every ``eval_models`` answer), for example to draw "
             "their predictions."),
    )),
    Phase("stage", "stage", "Only for a recipe with ``stages``: around each stage, a whole training "
          "run of the recipe with the stage's patch in ``<out>/stages/<name>/``, from a fresh model. "
          "A stage whose folder holds ``done.json`` is skipped when the same command runs again; an "
          "unfinished one continues from its ``last.pt``. Stage hooks are called on the stage's own "
          "plugins (its recipe's).", (
        Hook("stage_training_set", "decision", _a("stage: Stage"), "TrainingSet | None",
             "Before the stage's run is built. Return which stored pseudo-label sets of earlier stages "
             "(``\"<stage>/<set>\"``, stages this one ``reads``) it trains on beside the labeled set, "
             "how often the labeled list is repeated, and the augmentation of the pseudo-labelled "
             "samples only; the core serves them as one shuffled set of labeled samples (the recipe "
             "then has ``data.batch_unlabeled: 0``). Default (None): the recipe's data.",
             answers.training_set, never_called=("no_stages",)),
        Hook("stage_snapshots", "contribution", _a("stage: Stage; iters_per_epoch: int"),
             "Iterable[int] | None",
             "Once the stage's run is built. Return iterations at which the stage keeps a snapshot "
             "of its checkpoint (``snapshot_<iteration>.pt``, read with "
             "``dataset_pass.checkpoint(stage, iteration)``), e.g. the ends of chosen epochs.",
             answers.iterations, never_called=("no_stages",)),
        Hook("after_stage", "observer", _a("stage: Stage; dataset_pass: DatasetPass"), "None",
             "After the stage's training (and before ``done.json`` is written): a pass over the unlabeled "
             "set with image ids. ``dataset_pass.predict(checkpoints, ids, scales, flip)`` yields "
             "batches of ids and each checkpoint's probabilities; write this stage's outputs with "
             "``write_labels`` (PNG label maps, atomic; ``missing_labels`` says what a killed pass "
             "left undone) and ``write_ids``. Write nothing else: the stage folder is the core's.",
             grad="no_grad", never_called=("no_stages",)),
    )),
)

# contribution hook -> its commutative rule
CONTRIBUTION_RULES: dict[str, Combine] = {
    "build_modules": NAMED_UNION, "request_features": FEATURE_UNION, "forward_heads": NAMED_UNION,
    "weight_loss": PRODUCT,
    "extra_losses": NAMED_UNION, "eval_models": NAMED_UNION, "stage_snapshots": ITERATION_UNION,
}

HOOKS: dict[str, Hook] = {h.name: h for phase in PHASES for h in phase.hooks}
PHASE_OF: dict[str, str] = {h.name: phase.name for phase in PHASES for h in phase.hooks}
STEP_PHASES: tuple[str, ...] = tuple(p.name for p in PHASES if p.runner == "step")
# hooks called only while building a run, and only for a step with an unlabeled batch (the kit's sets)
BUILD_HOOKS: tuple[str, ...] = tuple(h.name for p in PHASES if p.runner in ("check", "build") for h in p.hooks)
UNLABELED_HOOKS: tuple[str, ...] = tuple(h.name for h in HOOKS.values() if h.unlabeled)
# hooks called only between the stages of a staged recipe (the kit trains one run: none of them)
STAGE_HOOKS: tuple[str, ...] = tuple(h.name for p in PHASES if p.runner == "stage" for h in p.hooks)


def phase(name: str) -> Phase:
    """The phase called ``name``; an unknown name is a ValueError listing the phases."""
    for p in PHASES:
        if p.name == name:
            return p
    raise ValueError(f"unknown phase {name!r}; phases: {', '.join(p.name for p in PHASES)}")
