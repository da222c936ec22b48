"""Hook spec versions: what changed in each, and whether a plugin class fits this ssseg.

A plugin class may declare ``requires_hookspec = N``: the oldest hook spec version
(:data:`ssseg.hookspecs.HOOKSPEC_VERSION`) it works with. Whoever bumps ``HOOKSPEC_VERSION`` adds
an entry to :data:`CHANGES` (a test checks it) and, for a removed or renamed hook, to
:data:`REMOVED`, so that a plugin written against the old specs is told what changed.
"""

from __future__ import annotations

import inspect
import re

from ssseg.hookspecs import HOOK_KINDS, HOOKSPEC_VERSION, hookimpl

# version -> what changed in it
CHANGES: dict[int, str] = {
    1: "the first hook specs: setup, build_teacher, before_iteration, estimate_hardness, plan_views, "
       "schedule_augmentation, supervised_loss, weight_loss, extra_losses, unsup_weight, "
       "after_optimizer_step, after_iteration, eval_models, after_eval",
    2: "new observer hook after_pseudo_label(ctx, unlabeled, pseudo), called right after the "
       "teacher's pseudo-labels and before estimate_hardness",
    3: "more trainable modules (build_modules, run.new_model, ctx.modules), features on request "
       "(request_features, outputs.features, pseudo.features), a pseudo-label source decision "
       "(pseudo_label_source), loss hooks see the labeled batch and every view's ViewInput "
       "(weight_loss gains view_input and runs for coefficient-0 views too; extra_losses gains "
       "labeled, hardness and views), Pseudo.logits are kept and mixed with CutMix (probs = soft "
       "targets), extra terms may be LossTerm(value, times_lambda_u=True), new observer "
       "after_backward, answers are checked (weight_loss [B] or [B,H,W], extra terms scalar "
       "tensors), view names 'labeled' and 'weak' are reserved (outputs.weak holds the weak batch's "
       "logits when it is forwarded; FeatureRequest.student_on_weak asks for it); removed: "
       "StepContext.progress (use ctx.iteration / ctx.max_iters)",
    4: "after_eval gains models (the evaluated modules by name); a second weak view of the same "
       "unlabeled images on request (FeatureRequest.second_view -> UnlabeledBatch.second, labelled "
       "in eval mode) that a CutMix plan may paste from (AugmentationPlan.cutmix_donor='second', "
       "donor_photometric); ssseg.api gains eval_mode and evaluation_grid",
    5: "the step is declared once (ssseg.step_table). Build hooks take a read-only "
       "build: BuildContext instead of run (build_modules(build), build_teacher(build, student), "
       "request_features(build)); pseudo_label_source(recipe) is decided from the recipe when it "
       "is checked; new observer validate(recipe, pseudo_label_source) refuses a recipe before "
       "anything is built; setup(run) runs once the Run is complete (teacher, decisions) and the "
       "Run no longer changes; run.teacher is always the pseudo-labelling module (the student when "
       "no plugin builds a teacher: test run.teacher is run.student, not None); Run has no pm or "
       "plugins; a plugin declares requires = {hook: suggested plugin}; eval_models may answer "
       "EvalModel(module, headline=True) (best.pt follows it); tryfirst/trylast/wrapper/"
       "hookwrapper are refused; hooks marked no_grad in the table run without gradient "
       "(after_pseudo_label, estimate_hardness, plan_views, schedule_augmentation, weight_loss, "
       "unsup_weight); ssseg.api gains BuildContext, EvalModel, cross_entropy, ema_decay, "
       "ema_update_, all_gather_rows, all_reduce_mean_, all_reduce_max_; evaluation_grid moved "
       "to ssseg.api from ssseg.suite.predict",
    6: "compose or refuse, and decisions that compose. AugmentationPlan's CutMix is now a tuple of "
       "CutMix(box, partner, donor, donor_photometric) in mixes, applied in order "
       "(AugmentationPlan(cutmix_box=b, cutmix_partner=p) is AugmentationPlan(mixes=(CutMix(b, p),)); "
       "cutmix_donor='second' is CutMix(..., donor='second')), and a CutMix may paste from the labeled "
       "batch with its ground truth (donor='labeled'); View(source='labeled') trains on the labeled batch "
       "against its ground truth; plan_views and schedule_augmentation gain labeled (the step's labeled "
       "batch); new decisions refine_views(ctx, views, labeled, hardness) and refine_augmentation(ctx, "
       "view, plan, labeled, unlabeled, pseudo, hardness) change another plugin's views or plan "
       "without restating it; new decision relabel(ctx, unlabeled, pseudo, views, outputs) after the "
       "student forward may replace views' pseudo-labels; ViewInput.weight carries the weight_loss "
       "product to extra_losses; ctx.supervised_loss(logits, target) is the recipe's supervised loss; "
       "check_recipe refuses a plugin answering a hook the recipe never calls (no unlabeled batch, "
       "pseudo-label source 'none', no views) or a decision whose answer no hook takes "
       "(estimate_hardness without a hook taking hardness); imas_augmentation's views option is gone "
       "(it refines the views of any strategy in the recipe, or plans its own when none does); "
       "staged training: a recipe's stages (each a training run in <out>/stages/<name>/) and the phase "
       "stage with stage_training_set(stage), stage_snapshots(stage, iters_per_epoch) and "
       "after_stage(stage, dataset_pass) (a pass over the unlabeled set with image ids; PNG "
       "pseudo-label sets written atomically and resumably); ssseg.api gains Stage, TrainingSet, "
       "DatasetPass and PassBatch",
    7: "new contribution forward_heads(ctx, outputs) right after the student's training forward: "
       "named tensors that contributed modules compute from its outputs, with gradient, once a step; "
       "relabel and extra_losses read them as outputs.heads[name] (StudentOutputs.heads); ssseg.api "
       "gains weighted_view_loss (the core's loss of a view, for a plugin's own head on a view). "
       "Nothing was removed: a plugin written for version 6 works unchanged",
}
# removed or renamed hook -> (the version that removed it, what to implement instead)
REMOVED: dict[str, tuple[int, str]] = {}
# removed attribute of a hook argument -> (the version that removed it, its pattern in a hook's
# source, what to use instead)
REMOVED_ATTRIBUTES: dict[str, tuple[int, str, str]] = {
    "StepContext.progress": (3, r"\bctx\.progress\b", "use ctx.iteration / ctx.max_iters"),
    "AugmentationPlan.cutmix_box": (6, r"\bcutmix_box\b", "a plan's CutMixes are AugmentationPlan(mixes=(CutMix(box, "
                                    "partner),)); read plan.mixes[k].box"),
    "AugmentationPlan.cutmix_partner": (6, r"\bcutmix_partner\b", "CutMix(box, partner) in AugmentationPlan.mixes; read "
                                        "plan.mixes[k].partner"),
    "AugmentationPlan.cutmix_donor": (6, r"\bcutmix_donor\b", "CutMix(box, partner, donor='second' or 'labeled', "
                                      "donor_photometric=...) in AugmentationPlan.mixes"),
}

# (hook, argument) a hook spec version renamed -> (that version, what to take instead)
RENAMED_ARGUMENTS: dict[tuple[str, str], tuple[int, str]] = {
    ("build_modules", "run"): (5, "build_modules(self, build): build is a read-only BuildContext "
                               "with the same recipe, data, student, device and new_model(seed)"),
    ("build_teacher", "run"): (5, "build_teacher(self, build, student)"),
    ("request_features", "run"): (5, "request_features(self, build); a check of another plugin's "
                                  "presence is a requires = {hook: plugin} declaration now"),
    ("pseudo_label_source", "run"): (5, "pseudo_label_source(self, recipe): decided from the recipe"),
}

_MARK = f"{hookimpl.project_name}_impl"


def implemented_hooks(cls: type) -> list[str]:
    """Names of the methods of ``cls`` marked with ``@hookimpl`` (hook specs or not)."""
    return [name for name in dir(cls) if hasattr(getattr(cls, name, None), _MARK)]


def changes_since(version: int) -> str:
    """What changed in the hook specs after ``version``, one clause per version."""
    return "; ".join(f"version {v}: {CHANGES[v]}" for v in range(version + 1, HOOKSPEC_VERSION + 1)
                     if v in CHANGES)


def hookspec_problem(cls: type) -> str | None:
    """Why ``cls`` does not fit this ssseg's hook specs (its ``requires_hookspec`` is newer, or
    it implements a removed hook), or None when it fits."""
    required = getattr(cls, "requires_hookspec", None)
    if required is not None and (not isinstance(required, int) or required < 1):
        return f"requires_hookspec must be a hook spec version (an integer >= 1), got {required!r}"
    if required is not None and required > HOOKSPEC_VERSION:
        return (f"needs hook spec version {required}, but this ssseg has version {HOOKSPEC_VERSION}; "
                f"upgrade ssseg (pip install -U ssseg)")
    for hook in implemented_hooks(cls):
        if hook in HOOK_KINDS:
            continue
        if hook in REMOVED:
            version, instead = REMOVED[hook]
            return f"implements {hook!r}, which hook spec version {version} removed: {instead}"
        if required is not None and required < HOOKSPEC_VERSION:
            return (f"implements {hook!r}, which hook spec version {HOOKSPEC_VERSION} does not have "
                    f"(the plugin was written for version {required}); changes since: "
                    f"{changes_since(required)}")
    return _removed_attribute_use(cls, required)


def _removed_attribute_use(cls: type, required: int | None) -> str | None:
    """A hook of ``cls``, written for an older hook spec, that reads a removed attribute."""
    for attribute, (version, pattern, instead) in REMOVED_ATTRIBUTES.items():
        if required is not None and required >= version:
            continue
        for hook in implemented_hooks(cls):
            try:
                source = inspect.getsource(getattr(cls, hook))
            except (OSError, TypeError):
                continue
            if re.search(pattern, source):
                return (f"hook {hook!r} reads {attribute}, which hook spec version {version} removed: "
                        f"{instead}")
    return None


def renamed_argument_hint(plugin: object) -> str:
    """For a plugin whose hooks take an argument a hook spec version renamed, what to take instead."""
    hints = []
    for hook in implemented_hooks(type(plugin)):
        try:
            params = inspect.signature(getattr(type(plugin), hook)).parameters
        except (TypeError, ValueError):
            continue
        for arg in params:
            if (hook, arg) in RENAMED_ARGUMENTS:
                version, instead = RENAMED_ARGUMENTS[hook, arg]
                hints.append(f"hook spec version {version} changed {hook}'s arguments: {instead}")
    return f" ({'; '.join(hints)})" if hints else ""


def removed_attribute_hint(err: Exception) -> str:
    """For an AttributeError on an attribute (or a TypeError on a constructor argument) that a hook
    spec version removed, what to use instead."""
    for attribute, (version, _, instead) in REMOVED_ATTRIBUTES.items():
        owner, name = attribute.split(".")
        read = isinstance(err, AttributeError) and f"'{owner}' object has no attribute '{name}'" in str(err)
        passed = isinstance(err, TypeError) and owner in str(err) and f"unexpected keyword argument '{name}'" in str(err)
        if read or passed:
            return f" ({attribute} was removed in hook spec version {version}: {instead})"
    return ""
