"""feature_distillation: the contract kit (2 gloo processes included), the loss, its recipe."""

from __future__ import annotations

from pathlib import Path

import torch

from ssseg.testing import OPT_IN_RULES, RULES, validate_recipe
from ssseg_feature_distillation import FeatureDistillation, distillation_loss

pytest_plugins = ["ssseg.testing"]

HERE = Path(__file__).resolve().parents[1]


def test_contract_including_two_processes(plugin_contract):
    plugin_contract(FeatureDistillation, config={"beta": 0.5},
                    compose_with={"mean_teacher": {}, "fixmatch": {}}, rules=RULES + OPT_IN_RULES)


def test_loss_is_two_minus_two_cosine():
    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    torch.testing.assert_close(distillation_loss(a, b), (2 - 2 * cosine).mean())
    assert float(distillation_loss(a, 3 * a)) < 1e-6


def test_recipe_validates():
    assert "feature_distillation" in validate_recipe(HERE / "recipe.yaml").plugins
