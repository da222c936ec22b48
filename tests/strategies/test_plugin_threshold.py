"""confidence_threshold: the per-pixel mask 1[conf ≥ τ] and its effect on the view loss."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from support.recipes import answer
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.api import Pseudo, UserError, View
from support.resume import step_logs
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.plugin_manager import instantiate

FIXMATCH = {"unsup": {"weight": 0.5, "supervised_weight": 0.5}, "plugins": {"fixmatch": {}}}


def losses(recipe, out_dir):
    out_dir.mkdir()
    Trainer(build_run(recipe, out_dir)).train()
    return step_logs(out_dir)


def test_default_config_and_errors_name_the_parameter():
    assert instantiate("confidence_threshold", {}).config.threshold == 0.95
    with pytest.raises(UserError, match=r"plugins\.confidence_threshold\.threshold"):
        instantiate("confidence_threshold", {"threshold": 1.2})


@settings(max_examples=30, deadline=None)
@given(tau=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_weight_is_one_exactly_where_conf_reaches_tau(tau, seed):
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(2, 5, 6, generator=g)
    conf[0, 0, 0] = tau  # the boundary counts
    valid = torch.rand(2, 5, 6, generator=g) < 0.5
    pseudo = Pseudo(labels=torch.zeros(2, 5, 6, dtype=torch.long), conf=conf, valid=valid)
    logged = {}
    ctx = SimpleNamespace(log=lambda name, value: logged.update({name: float(value)}))
    plugin = instantiate("confidence_threshold", {"threshold": tau})
    weight = answer(plugin, "weight_loss", ctx=ctx, view=View("strong"), pseudo=pseudo, hardness=None)
    assert weight.shape == conf.shape and weight[0, 0, 0] == 1
    assert torch.equal(weight, torch.where(conf >= tau, 1.0, 0.0))
    assert logged["mask_ratio/strong"] == pytest.approx(float((weight * valid).sum() / max(int(valid.sum()), 1)))


def test_threshold_zero_changes_nothing_and_one_silences_the_view(tmp_path, tiny):
    plain = losses(tiny(FIXMATCH), tmp_path / "plain")
    zero = losses(tiny({**FIXMATCH, "plugins": {"fixmatch": {}, "confidence_threshold": {"threshold": 0.0}}}),
                  tmp_path / "zero")
    one = losses(tiny({**FIXMATCH, "plugins": {"fixmatch": {}, "confidence_threshold": {"threshold": 1.0}}}),
                 tmp_path / "one")
    assert [r["loss"] for r in zero] == [r["loss"] for r in plain]
    assert all(math.isfinite(r["loss"]) and r["mask_ratio/strong"] == 1 for r in zero)
    assert all(r["loss_u/strong"] == 0 and r["mask_ratio/strong"] == 0 for r in one)
