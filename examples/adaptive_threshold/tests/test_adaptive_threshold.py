"""The adaptive threshold plugin: the contract kit, the SAT equations, DDP averaging, its recipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ssseg_adaptive_threshold.plugin as plugin_module
from ssseg.api import Pseudo, View
from ssseg.testing import validate_recipe
from ssseg_adaptive_threshold import AdaptiveThreshold, SelfAdaptiveThresholds

pytest_plugins = ["ssseg.testing"]

HERE = Path(__file__).resolve().parents[1]


def test_contract(plugin_contract):
    plugin_contract(AdaptiveThreshold, config={"decay": 0.9},
                    compose_with={"mean_teacher": {}, "fixmatch": {}})


def probabilities() -> tuple[torch.Tensor, torch.Tensor]:
    """Two pixels of two classes, q = (0.9, 0.1) and (0.4, 0.6), and a padding pixel."""
    probs = torch.tensor([[0.9, 0.4, 0.5], [0.1, 0.6, 0.5]]).view(1, 2, 1, 3)
    return probs, torch.tensor([[[True, True, False]]])


def test_update_is_the_ema_of_the_mean_max_confidence_and_class_probabilities():
    stats = SelfAdaptiveThresholds(2)
    stats.update(*probabilities(), decay=0.9)
    tau = 0.9 * 0.5 + 0.1 * (0.9 + 0.6) / 2                       # λτ_0 + (1 − λ) mean max q
    p_tilde = torch.tensor([0.9 * 0.5 + 0.1 * 0.65, 0.9 * 0.5 + 0.1 * 0.35])
    assert stats.tau.item() == pytest.approx(tau)
    torch.testing.assert_close(stats.p_tilde, p_tilde)
    torch.testing.assert_close(stats.thresholds(), p_tilde / p_tilde.max() * tau)


def test_statistics_are_averaged_over_ranks(monkeypatch):
    alone = SelfAdaptiveThresholds(2)
    alone.update(*probabilities(), decay=0.9)
    two_alike = SelfAdaptiveThresholds(2)
    monkeypatch.setattr(plugin_module, "all_reduce_sum_", lambda t: t.mul_(2))  # two identical ranks
    two_alike.update(*probabilities(), decay=0.9)
    torch.testing.assert_close(two_alike.state_dict(), alone.state_dict())


def test_a_batch_without_valid_pixels_changes_nothing():
    stats = SelfAdaptiveThresholds(2)
    probs, valid = probabilities()
    stats.update(probs, torch.zeros_like(valid), decay=0.9)
    torch.testing.assert_close(stats.thresholds(), torch.full((2,), 0.5))


def test_weight_is_one_where_the_confidence_reaches_the_class_threshold():
    plugin = AdaptiveThreshold(AdaptiveThreshold.Config())
    plugin.stats = SelfAdaptiveThresholds(2)
    plugin.stats.p_tilde.copy_(torch.tensor([0.8, 0.4]))
    plugin.stats.tau.fill_(0.9)                                    # τ(c) = (0.9, 0.45)
    pseudo = Pseudo(labels=torch.tensor([[[0, 0, 1, 1]]]), conf=torch.tensor([[[0.95, 0.5, 0.5, 0.4]]]),
                    valid=torch.ones(1, 1, 4, dtype=torch.bool))

    class Ctx:
        def log(self, name, value):
            self.logged = (name, float(value))

    ctx = Ctx()
    weight = plugin.weight_loss(ctx=ctx, view=View("strong"), pseudo=pseudo, hardness=None)
    assert weight.tolist() == [[[1.0, 0.0, 1.0, 0.0]]]
    assert ctx.logged == ("mask_ratio/strong", 0.5)


def test_recipe_and_suite_validate(tmp_path):
    assert "adaptive_threshold" in validate_recipe(HERE / "recipe.yaml").plugins
    # the suite through its command: a dry run checks every variant's recipe and plugins, runs nothing
    listed = subprocess.run([sys.executable, "-m", "ssseg", "suite", "run", "--dry-run",
                             str(HERE / "suite.yaml"), "--out", str(tmp_path / "suite")],
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    runs = [line for line in listed.stdout.splitlines() if not line.startswith(" ")]  # not the command lines
    assert {line.split("/")[0] for line in runs} == {"fixed", "adaptive"}
