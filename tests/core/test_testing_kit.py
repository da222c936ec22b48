"""The contract kit (ssseg.testing) reports each deliberately broken plugin with the rule it breaks."""

from __future__ import annotations

import copy

import attrs
import pytest
import torch

from support import recorder
from ssseg import compat
from ssseg.api import HOOKSPEC_VERSION, Plugin, UserError, View, hookimpl, in_range
from ssseg.testing import RULES, ContractViolation, check_plugin

pytest_plugins = ["ssseg.testing"]


class Ramp(Plugin):
    """A correct plugin: per-pixel weights conf ** power."""

    name = "ramp"

    @attrs.frozen
    class Config:
        power: float = attrs.field(default=2.0, validator=in_range(0))

    @hookimpl
    def weight_loss(self, ctx, view, pseudo, hardness):
        return pseudo.conf ** self.config.power


def broken(rule: str, message: str, cls: type, **kwargs) -> None:
    """Assert that the kit reports ``cls`` under ``rule`` with ``message`` in the text."""
    with pytest.raises(ContractViolation, match=message) as info:
        check_plugin(cls, **kwargs)
    assert info.value.rule == rule
    assert f"rule {rule!r} broken by" in str(info.value) and "\nFix: " in str(info.value)


def test_a_correct_plugin_passes_every_rule_through_the_fixture(plugin_contract):
    plugin_contract(Ramp, config={"power": 3.0})


def test_a_misspelled_hook_breaks_hooks():
    broken("hooks", "'plan_view', which is no ssseg hook .did you mean 'plan_views'", recorder.Misspelled)


def test_an_argument_the_hook_does_not_pass_breaks_hooks():
    broken("hooks", "batch", recorder.ExtraArgument)


def test_a_hook_named_method_without_hookimpl_breaks_hooks():
    class Forgotten(Ramp):
        def unsup_weight(self, ctx):
            return 0.5

    broken("hooks", "unsup_weight are named after hooks but lack @hookimpl", Forgotten)


def test_a_default_that_fails_its_validator_breaks_config():
    class WrongDefault(Ramp):
        @attrs.frozen
        class Config:
            threshold: float = attrs.field(default=1.5, validator=in_range(0, 1))

    broken("config", r"plugins\.ramp\.threshold: 1\.5 is out of range", WrongDefault)


def test_a_config_that_a_recipe_cannot_hold_breaks_config():
    class Unwritable(Ramp):
        @attrs.frozen
        class Config:
            scales: list = attrs.field(factory=lambda: [1, 2])

    broken("config", "cannot be written in a recipe", Unwritable)


def test_a_config_error_names_the_given_key():
    broken("config", "unknown key", Ramp, config={"powr": 2.0})


def test_a_newer_hookspec_breaks_hookspec():
    class Future(Ramp):
        requires_hookspec = HOOKSPEC_VERSION + 1

    broken("hookspec", f"needs hook spec version {HOOKSPEC_VERSION + 1}", Future)


def test_a_removed_hook_is_reported_with_what_replaced_it(monkeypatch):
    monkeypatch.setitem(compat.REMOVED, "weigh", (HOOKSPEC_VERSION, "answer weight_loss instead"))

    class Old(Ramp):
        @hookimpl
        def weigh(self, ctx):
            return None

    broken("hookspec", "'weigh', which hook spec version .* removed: answer weight_loss instead", Old)


def test_every_hookspec_version_says_what_changed():
    assert set(compat.CHANGES) == set(range(1, HOOKSPEC_VERSION + 1))


def test_a_non_finite_loss_breaks_composes():
    class Poison(Ramp):
        @hookimpl
        def weight_loss(self, ctx, view, pseudo, hardness):
            return torch.full_like(pseudo.conf, float("inf"))

    broken("composes", "non-finite loss", Poison)


def test_a_hook_the_recipe_never_calls_breaks_composes():
    broken("composes", "answers weight_loss, which this recipe never calls: no plugin of the recipe plans views",
           Ramp, compose_with={"mean_teacher": {}})


def test_a_contribution_that_changes_nothing_breaks_acts():
    class Ones(Ramp):
        @hookimpl
        def weight_loss(self, ctx, view, pseudo, hardness):
            return torch.ones_like(pseudo.conf)  # the product's neutral element: dropped in effect

    broken("acts", "trains as without it .*its answers to weight_loss never change training or evaluation", Ones,
           rules=["acts"])


def test_a_contribution_that_reaches_the_loss_passes_acts():
    check_plugin(Ramp, rules=["acts"])


class Refused(Ramp):
    """Ramp that refuses recipes without a confidence threshold, naming itself."""

    @hookimpl
    def validate(self, recipe):
        if "confidence_threshold" not in recipe.plugins:
            raise UserError(f"plugins.{self.recipe_key}: its weight_loss needs thresholded pseudo-labels; "
                            "add `confidence_threshold: {}` to the recipe's plugins")


def test_a_plugin_refused_naming_itself_passes_acts():
    check_plugin(Refused, rules=["acts"])


def test_a_refusal_that_does_not_name_the_plugin_breaks_acts():
    class Anonymous(Ramp):
        @hookimpl
        def validate(self, recipe):
            raise UserError("this recipe will not work")

    broken("acts", "refused the tiny recipe .* without naming the plugin: this recipe", Anonymous,
           rules=["acts"])


def test_a_plugin_that_only_observes_is_exempt_from_acts():
    class Logger(Plugin):
        name = "logger"

        @attrs.frozen
        class Config:
            pass

        @hookimpl
        def after_iteration(self, ctx, logs):
            pass

    check_plugin(Logger, rules=["acts"])


class Calls(Ramp):
    """Counts its steps in an attribute, which is state."""

    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    @hookimpl
    def before_iteration(self, ctx):
        self.calls += 1


class Counter(Calls):
    """Calls whose state survives a checkpoint."""

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_restored_state_passes_resume():
    check_plugin(Counter, rules=["resume"])


def test_state_that_is_not_restored_breaks_resume():
    class Forgetful(Counter):
        def load_state_dict(self, state):
            pass

    broken("resume", "plugin state 'calls' differs: 2 vs 1", Forgetful, rules=["resume"])


def test_state_that_is_not_saved_breaks_resume():
    broken("resume", "plugin state 'calls' differs", Calls, rules=["resume"])


def test_saving_without_restoring_breaks_resume():
    class HalfState(Ramp):
        def state_dict(self):
            return {}

    broken("resume", "only one of state_dict and load_state_dict", HalfState, rules=["resume"])


def test_a_contribution_that_mutates_its_arguments_breaks_order():
    class Mutating(Ramp):
        @hookimpl
        def weight_loss(self, ctx, view, pseudo, hardness):
            pseudo.conf.mul_(0.5)  # the next plugin sees halved confidences

    companions = {"mean_teacher": {}, "fixmatch": {}, "confidence_threshold": {"threshold": 0.3}}
    broken("order", "with the plugin first and with it last differs: loss", Mutating,
           compose_with=companions, rules=["order"])


def draws_an_extra_view(generator_of):
    """A view planner whose extra view is a coin flip from ``generator_of(ctx)``."""

    class Coin(Plugin):
        name = "coin"

        @attrs.frozen
        class Config:
            pass

        @hookimpl
        def plan_views(self, ctx, hardness):
            extra = bool(torch.rand((), generator=generator_of(ctx)) < 0.5)
            return [View("a")] + ([View("b", coef=0.5)] if extra else [])

    return Coin


def test_control_flow_from_the_shared_generator_passes():
    check_plugin(draws_an_extra_view(lambda ctx: ctx.shared_generator), rules=["shared-randomness"])


def test_control_flow_from_the_per_rank_generator_breaks_shared_randomness():
    broken("shared-randomness", r"plan_views \(answered by coin\) gave .* on simulated rank 0",
           draws_an_extra_view(lambda ctx: ctx.generator))


def test_unknown_rules_are_refused():
    with pytest.raises(ValueError, match="valid: " + ", ".join(RULES)):
        check_plugin(Ramp, rules=["ordr"])


@pytest.mark.slow
def test_the_distributed_rule_names_plugin_state_that_diverges_across_ranks(tmp_path):
    from support.recorder import RankCounter
    with pytest.raises(ContractViolation, match=r"rule 'distributed'.*plugin 'rank_counter''s state "
                                                r"'count' differs between the ranks: 0 vs 2"):
        check_plugin(RankCounter, rules=["distributed"], workdir=tmp_path)


@pytest.mark.slow
def test_the_distributed_rule_passes_a_plugin_whose_state_agrees(tmp_path):
    from ssseg_plugins.confidence_threshold import ConfidenceThreshold
    check_plugin(ConfidenceThreshold, rules=["distributed"], workdir=tmp_path)


class FrozenStart(Plugin):
    """Evaluates the student as it was at the start beside it: answers eval_models only."""

    name = "frozen_start"

    @attrs.frozen
    class Config:
        pass

    @hookimpl
    def setup(self, run):
        self.start = copy.deepcopy(run.student)

    @hookimpl
    def eval_models(self, run):
        return {"start": self.start}


def test_a_plugin_that_adds_an_evaluated_model_acts():
    check_plugin(FrozenStart, rules=["acts"])


def test_an_evaluation_plugin_that_adds_no_model_breaks_acts():
    class NoModel(FrozenStart):
        @hookimpl
        def eval_models(self, run):
            return {}

    broken("acts", r"trains as without it .* and evaluates the same models \(student, teacher\): its answers to "
           "eval_models never change", NoModel, rules=["acts"])
