"""unimatch: views, independent strong views, the total loss formula, short runs and resume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from resume_support import assert_resume_is_exact, step_logs
from ssseg.api import UnlabeledBatch, UserError, Pseudo
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.plugin_manager import instantiate

RECIPE = {"unsup": {"weight": 0.5, "supervised_weight": 0.5},
          "plugins": {"unimatch": {}, "confidence_threshold": {"threshold": 0.2}}}


def test_default_config_and_errors_name_the_parameter():
    config = instantiate("unimatch", {}).config
    assert (config.fp_dropout, config.p_cutmix, config.p_jitter) == (0.5, 0.5, 0.8)
    with pytest.raises(UserError, match=r"plugins\.unimatch\.fp_dropout"):
        instantiate("unimatch", {"fp_dropout": 1.0})


def test_views_are_two_strong_images_and_one_feature_dropout():
    views = instantiate("unimatch", {}).plan_views(ctx=None, hardness=None)
    assert [(v.name, v.kind, v.coef) for v in views] == [("s1", "image", 0.25), ("s2", "image", 0.25),
                                                         ("fp", "feature", 0.5)]
    assert views[2].dropout == 0.5


def test_the_two_strong_views_draw_independently():
    plugin = instantiate("unimatch", {"p_cutmix": 1})
    views = plugin.plan_views(ctx=None, hardness=None)
    image = torch.rand(4, 3, 32, 32)
    batch = UnlabeledBatch(image=image, valid=torch.ones(4, 32, 32, dtype=torch.bool))
    pseudo = Pseudo(labels=torch.zeros(4, 32, 32, dtype=torch.long), conf=torch.ones(4, 32, 32), valid=batch.valid)
    ctx = SimpleNamespace(generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    s1, s2 = (plugin.schedule_augmentation(ctx=ctx, view=v, unlabeled=batch, pseudo=pseudo, hardness=None)
              for v in views[:2])
    assert not torch.equal(s1.cutmix_box, s2.cutmix_box)
    assert not torch.equal(s1.photometric(image), s2.photometric(image))
    assert torch.equal(s1.cutmix_partner, s2.cutmix_partner), "one mix batch for both views"


def test_total_is_half_of_supervised_plus_weighted_views(tmp_path, tiny):
    trainer = Trainer(build_run(tiny(RECIPE), tmp_path))
    trainer.train()
    logs = step_logs(tmp_path)
    assert len(logs) == 2
    for r in logs:
        views = [r["loss_u/s1"], r["loss_u/s2"], r["loss_u/fp"]]
        assert all(math.isfinite(v) and v > 0 for v in views)
        assert r["loss"] == pytest.approx((r["loss_x"] + 0.25 * views[0] + 0.25 * views[1] + 0.5 * views[2]) / 2,
                                          rel=1e-5)
        assert r["loss_u/s1"] != r["loss_u/s2"]


def test_resume_continues_with_the_same_draws(tmp_path, tiny):
    """Resuming from the checkpoint of step 2 gives step 3 of an uninterrupted run exactly."""
    assert_resume_is_exact(tiny({**RECIPE, "optim": {"iters": 3}}), tmp_path)
