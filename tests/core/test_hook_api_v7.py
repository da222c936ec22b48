"""Hook spec 7: heads that contributed modules compute from the student's forward, once a step,
with gradient, visible to relabel and the losses."""

from __future__ import annotations

import pytest
import torch

from support import compose
from ssseg import compat, step_table
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.errors import PluginError, UserError

USE = "support.compose:"


def test_forward_heads_run_once_and_reach_relabel_and_the_losses_with_gradient(tiny):
    compose.CountingHead.calls = 0
    trainer = Trainer(build_run(tiny({"plugins": {"fixmatch": {}, "h": {"use": USE + "CountingHead"}}})))
    result = trainer.step(*next(trainer.batches()))
    assert compose.CountingHead.calls == 1
    head = result.outputs.heads["head/labeled"]
    assert compose.CountingHead.seen_in_relabel["head/labeled"] is head
    assert head.requires_grad
    assert result.terms["head"] == head.square().mean()
    conv = trainer.run.modules["head"]
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_a_forward_heads_answer_that_is_no_tensor_is_refused_naming_plugin_and_hook(tiny):
    trainer = Trainer(build_run(tiny({"plugins": {"fixmatch": {}, "bad": {"use": USE + "HeadNotATensor"}}})))
    with pytest.raises(PluginError, match=r"'bad' gave a wrong answer in hook 'forward_heads': entry "
                                          r"'head/x': expected a string name and a tensor"):
        trainer.step(*next(trainer.batches()), until="forward")


def test_two_plugins_naming_the_same_head_are_refused(tiny):
    rule = step_table.HOOKS["forward_heads"].combine
    with pytest.raises(UserError, match="two plugins answer forward_heads with the same name 'a'"):
        rule.apply("forward_heads", [{"a": torch.zeros(1)}, {"a": torch.ones(1)}], {})


def test_no_heads_leave_the_outputs_without_heads(tiny):
    trainer = Trainer(build_run(tiny({"plugins": {"fixmatch": {}}})))
    assert trainer.step(*next(trainer.batches()), until="forward").outputs.heads == {}


def test_version_7_says_what_it_added_and_that_nothing_was_removed():
    assert step_table.HOOKSPEC_VERSION == 7
    assert "forward_heads(ctx, outputs)" in compat.CHANGES[7] and "works unchanged" in compat.CHANGES[7]
