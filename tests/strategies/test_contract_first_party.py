"""Every first-party plugin passes the same contract kit as third-party plugins (ssseg.testing)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from ssseg.plugin_manager import ENTRY_POINT_GROUP, FIRST_PARTY_DIST

pytest_plugins = ["ssseg.testing"]

# the companions a plugin needs to be exercised (default: mean_teacher and fixmatch, see ssseg.testing)
COMPANIONS = {
    "supervised": {"compose_with": {}, "recipe": {"data": {"batch_unlabeled": 0}}},
    "mean_teacher": {"compose_with": {"fixmatch": {}, "confidence_threshold": {}}},
    "imas_weighting": {"compose_with": {"mean_teacher": {}, "fixmatch": {}, "imas_hardness": {}}},
    "imas_augmentation": {"compose_with": {"mean_teacher": {}, "imas_hardness": {}}},
    "imas_hardness": {"compose_with": {"mean_teacher": {}, "fixmatch": {}, "imas_weighting": {}}},
    "ohem": {"config": {"min_kept": 300}},  # below the tiny recipe's 2 × 32² labeled pixels
    "cps": {"compose_with": {}},
    # the kit's 2 iterations fall in U2PL's supervised warm start unless it is 0 epochs long
    "u2pl": {"config": {"sup_only_epochs": 0}, "compose_with": {"mean_teacher": {}}},
    "tensorboard": {"config": {"images": 1}},  # one image per grid keeps the kit's runs short
    # the released composition: EMA teacher copying the student through epoch 0, τ, L_u over B·H·W
    "augseg": {"compose_with": {"mean_teacher": {"warmup_epochs": 1}, "confidence_threshold": {}},
               "recipe": {"unsup": {"normalize": "pixels"}}},
    # CorrMatch plans its own views and thresholds them (its adaptive τ)
    "corrmatch": {"compose_with": {}},
    # self-training trains on labeled (and pseudo-labelled) samples only; its stage hooks are
    # tested in tests/strategies/test_self_training.py
    "st": {"compose_with": {}, "recipe": {"data": {"batch_unlabeled": 0}}},
    "st_plus_plus": {"compose_with": {}, "recipe": {"data": {"batch_unlabeled": 0}}},
}
# first-party plugins that need an optional extra: module to import, else the contract test skips
EXTRAS = {"tensorboard": "torch.utils.tensorboard"}
FIRST_PARTY = sorted((ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.dist.name == FIRST_PARTY_DIST),
                     key=lambda ep: ep.name)


def test_every_companion_entry_is_a_first_party_plugin():
    assert set(COMPANIONS) <= {ep.name for ep in FIRST_PARTY}


@pytest.mark.parametrize("entry_point", FIRST_PARTY, ids=lambda ep: ep.name)
def test_first_party_plugin_keeps_the_contract(entry_point, plugin_contract):
    if entry_point.name in EXTRAS:
        pytest.importorskip(EXTRAS[entry_point.name])
    plugin_contract(entry_point.load(), **COMPANIONS.get(entry_point.name, {}))
