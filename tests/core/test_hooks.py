"""The golden order: the one place besides the step table that states it. The runner calls every
hook in that order, and the hook kinds are enforced."""

from __future__ import annotations

import pytest

from support import recorder
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.hookspecs import HOOK_KINDS
from ssseg.plugin_manager import PluginError

USE = "support.recorder:"


def plugin(cls: str, **params):
    return {"use": USE + cls, **params}


@pytest.fixture(autouse=True)
def _clear():
    recorder.CALLS.clear()


STEP = ["before_iteration", "after_pseudo_label", "estimate_hardness", "plan_views", "refine_views",
        "schedule_augmentation", "refine_augmentation", "forward_heads", "relabel", "supervised_loss", "weight_loss", "extra_losses", "unsup_weight", "after_backward",
        "after_optimizer_step", "after_iteration"]
# independent of ssseg/step_table.py on purpose: a change of order must change both
BUILD = ["pseudo_label_source", "validate", "build_modules", "build_teacher", "request_features", "setup"]
STAGE = ["stage_training_set", "stage_snapshots", "after_stage"]


def test_golden_call_order_over_two_iterations(tiny):
    recipe = tiny({"optim": {"iters": 2}, "plugins": {"rec": plugin("Recorder")}})
    Trainer(build_run(recipe)).train()
    assert recorder.CALLS == [*BUILD, "eval_models", *STEP, *STEP, "eval_models", "after_eval"]


def test_hook_order_matches_the_spec_module():
    assert list(HOOK_KINDS) == [*BUILD, *STEP, "eval_models", "after_eval", *STAGE]


def test_observers_run_in_recipe_order(tiny):
    recipe = tiny({"optim": {"iters": 1}, "plugins": {
        "first": plugin("Observer", tag="1:"), "second": plugin("Observer", tag="2:")}})
    Trainer(build_run(recipe)).train()
    assert recorder.CALLS == ["1:before_iteration", "2:before_iteration"]
    recorder.CALLS.clear()
    recipe = tiny({"optim": {"iters": 1}, "plugins": {
        "second": plugin("Observer", tag="2:"), "first": plugin("Observer", tag="1:")}})
    Trainer(build_run(recipe)).train()
    assert recorder.CALLS == ["2:before_iteration", "1:before_iteration"]


def test_two_providers_of_a_decision_hook_is_an_error_naming_both(tiny):
    recipe = tiny({"plugins": {"a": plugin("Recorder"), "b": plugin("Recorder")}})
    with pytest.raises(PluginError, match=r"'a' and 'b' both answer the decision hook"):
        build_run(recipe)


def test_unknown_hook_name_is_an_error_with_a_suggestion(tiny):
    with pytest.raises(PluginError, match=r"'plan_view'.*no ssseg hook.*did you mean 'plan_views'"):
        build_run(tiny({"plugins": {"m": plugin("Misspelled")}}))


def test_hook_arguments_must_match_the_spec(tiny):
    with pytest.raises(PluginError, match=r"plugin 'x'.*plan_views.*'batch'.*can not be found in the hookspec"):
        build_run(tiny({"plugins": {"x": plugin("ExtraArgument")}}))


def test_exception_in_a_hook_names_plugin_and_hook(tiny):
    built = build_run(tiny({"plugins": {"bad": plugin("Broken")}}))
    with pytest.raises(PluginError, match=r"plugin 'bad' failed in hook 'before_iteration'.*boom"):
        Trainer(built).train()
