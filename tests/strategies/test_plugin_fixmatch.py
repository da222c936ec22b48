"""fixmatch: the strong view's plan (CutMix alignment, reversed partner, box geometry), the
reference loss, plugin-order independence, short runs and resume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.api import Pseudo, UnlabeledBatch, UserError, View
from ssseg.engine.run import build_run
from support.recipes import answer, view_of_plan
from support.resume import assert_resume_is_exact, step_logs
from ssseg.engine.trainer import Trainer
from ssseg.plugin_manager import instantiate

REFERENCE = {"unsup": {"weight": 0.5, "supervised_weight": 0.5},
             "plugins": {"fixmatch": {}, "confidence_threshold": {"threshold": 0.2}}}
MODERN = {"unsup": {"weight": 0.5, "supervised_weight": 0.5},
          "plugins": {"mean_teacher": {}, "fixmatch": {}, "confidence_threshold": {"threshold": 0.2}}}


def train(recipe, out_dir, checkpointer=None):
    """Train ``recipe`` writing logs to ``out_dir``; return the trainer and its per-step logs."""
    out_dir.mkdir(exist_ok=True)
    trainer = Trainer(build_run(recipe, out_dir), checkpointer=checkpointer)
    trainer.train()
    return trainer, step_logs(out_dir)


def test_default_config_and_errors_name_the_parameter():
    config = instantiate("fixmatch", {}).config
    assert (config.p_jitter, config.p_gray, config.p_blur, config.p_cutmix) == (0.8, 0.2, 0.5, 0.5)
    with pytest.raises(UserError, match=r"plugins\.fixmatch\.p_cutmix"):
        instantiate("fixmatch", {"p_cutmix": 1.5})


def strong_view(plugin, batch, pseudo, seed):
    ctx = SimpleNamespace(generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"))
    view = answer(plugin, "plan_views", ctx=ctx, hardness=None)[0]
    plan = answer(plugin, "schedule_augmentation", ctx=ctx, view=view, unlabeled=batch, pseudo=pseudo, hardness=None)
    return plan, view_of_plan(plan, batch, pseudo)


def encoded_batch(b, h, w, seed):
    """Images whose channels encode (label, confidence, sample index) of each pixel."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (b, h, w), generator=g)
    conf = torch.rand(b, h, w, generator=g)
    valid = torch.rand(b, h, w, generator=g) < 0.7
    index = torch.arange(b).view(b, 1, 1).expand(b, h, w)
    image = torch.stack([labels / 4, conf, index / max(b - 1, 1)], 1)
    return UnlabeledBatch(image=image, valid=valid), Pseudo(labels=labels, conf=conf, valid=valid)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 6), h=st.integers(4, 24), w=st.integers(4, 24), seed=st.integers(0, 2**31))
def test_cutmix_keeps_image_and_labels_aligned_and_invalid_pixels_invalid(b, h, w, seed):
    plugin = instantiate("fixmatch", {"p_jitter": 0, "p_gray": 0, "p_blur": 0, "p_cutmix": 1})
    batch, pseudo = encoded_batch(b, h, w, seed)
    plan, (image, mixed) = strong_view(plugin, batch, pseudo, seed)
    assert plan.mixes[0].partner.tolist() == list(range(b - 1, -1, -1))
    src = (image[:, 2] * max(b - 1, 1)).round().long()  # the sample each pixel came from
    assert torch.equal((image[:, 0] * 4).round().long(), mixed.labels)
    assert torch.equal(image[:, 1], mixed.conf)
    assert torch.equal(mixed.valid, batch.valid[src, torch.arange(h).view(1, h, 1), torch.arange(w)])
    own = torch.arange(b).view(b, 1, 1)
    assert torch.equal(src != own, plan.mixes[0].box & (plan.mixes[0].partner.view(b, 1, 1) != own))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_cutmix_boxes_are_rectangles_of_the_specified_area_and_aspect(seed):
    b, h, w = 64, 40, 50
    plugin = instantiate("fixmatch", {})
    batch, pseudo = encoded_batch(b, h, w, 0)
    plan, _ = strong_view(plugin, batch, pseudo, seed)
    box = plan.mixes[0].box
    rows, cols = box.any(2), box.any(1)
    height, width = rows.sum(1), cols.sum(1)
    fired = height > 0
    assert torch.equal(box.sum((1, 2)), height * width), "one axis-aligned rectangle inside the crop"
    area, aspect = (height * width)[fired] / (h * w), height[fired] / width[fired]
    assert (area <= 0.4).all() and (area >= 0.01).all()  # U[0.02, 0.4]·H·W, truncated to whole pixels
    assert (aspect > 0.2).all() and (aspect < 1 / 0.2).all()
    assert 10 < int(fired.sum()) < 54, "about half the samples get a box (p 0.5)"


def test_the_strong_image_is_the_photometric_view_mixed_with_the_same_box():
    plugin = instantiate("fixmatch", {"p_cutmix": 1})
    batch, pseudo = encoded_batch(4, 16, 16, 3)
    plan, (image, _) = strong_view(plugin, batch, pseudo, 3)
    strong = plan.photometric(batch.image)
    assert not torch.equal(strong, batch.image)
    torch.testing.assert_close(image, torch.where(plan.mixes[0].box.unsqueeze(1), strong.flip(0), strong))


def test_draws_are_independent_per_call_and_follow_the_generator():
    plugin = instantiate("fixmatch", {"p_cutmix": 1})
    batch, pseudo = encoded_batch(4, 16, 16, 0)
    ctx = SimpleNamespace(generator=torch.Generator().manual_seed(5), device=torch.device("cpu"))
    first, second = (answer(plugin, "schedule_augmentation", ctx=ctx, view=View("strong"), unlabeled=batch,
                                                  pseudo=pseudo, hardness=None) for _ in range(2))
    assert not torch.equal(first.mixes[0].box, second.mixes[0].box)
    again, _ = strong_view(plugin, batch, pseudo, 5)
    assert torch.equal(again.mixes[0].box, first.mixes[0].box)
    assert torch.equal(again.photometric(batch.image), first.photometric(batch.image))


def test_reference_loss_is_the_mean_of_supervised_and_unsupervised(tmp_path, tiny):
    trainer, logs = train(tiny(REFERENCE), tmp_path)
    assert trainer.run.teacher is trainer.run.student, "online FixMatch: the student labels"
    for r in logs:
        assert math.isfinite(r["loss"]) and r["loss_u/strong"] > 0
        assert r["loss"] == pytest.approx((r["loss_x"] + r["loss_u/strong"]) / 2, rel=1e-5)


def test_plugin_order_does_not_change_the_losses(tmp_path, tiny):
    forward = MODERN["plugins"]
    backward = dict(reversed(list(forward.items())))
    assert list(backward) != list(forward)
    _, a = train(tiny(MODERN), tmp_path / "a")
    trainer, b = train(tiny({**MODERN, "plugins": backward}), tmp_path / "b")
    assert list(trainer.plugins.plugins) == list(backward)
    assert a == b


def test_resume_continues_with_the_same_draws(tmp_path, tiny):
    """Resuming from the checkpoint of step 2 gives step 3 of an uninterrupted run exactly."""
    assert_resume_is_exact(tiny({**MODERN, "optim": {"iters": 3}}), tmp_path)
