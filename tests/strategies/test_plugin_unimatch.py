"""unimatch: views, independent strong views, the total loss formula, short runs and resume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from support.recipes import answer

from support.resume import assert_resume_is_exact, step_logs
from ssseg.step_table import HOOKS
from ssseg.api import AugmentationPlan, CutMix, LabeledBatch, Pseudo, UnlabeledBatch, UserError, View
from ssseg.data.registry import build_data
from ssseg.engine.run import build_run
from ssseg.engine.sampling import SeededSamples
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
    views = answer(instantiate("unimatch", {}), "plan_views", ctx=None, hardness=None)
    assert [(v.name, v.kind, v.coef) for v in views] == [("s1", "image", 0.25), ("s2", "image", 0.25),
                                                         ("fp", "feature", 0.5)]
    assert views[2].dropout == 0.5


def test_the_two_strong_views_draw_independently():
    plugin = instantiate("unimatch", {"p_cutmix": 1})
    views = answer(plugin, "plan_views", ctx=None, hardness=None)
    image = torch.rand(4, 3, 32, 32)
    batch = UnlabeledBatch(image=image, valid=torch.ones(4, 32, 32, dtype=torch.bool))
    pseudo = Pseudo(labels=torch.zeros(4, 32, 32, dtype=torch.long), conf=torch.ones(4, 32, 32), valid=batch.valid)
    ctx = SimpleNamespace(generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    s1, s2 = (answer(plugin, "schedule_augmentation", ctx=ctx, view=v, unlabeled=batch, pseudo=pseudo, hardness=None)
              for v in views[:2])
    assert not torch.equal(s1.mixes[0].box, s2.mixes[0].box)
    assert not torch.equal(s1.photometric(image), s2.photometric(image))
    assert torch.equal(s1.mixes[0].partner, s2.mixes[0].partner), "one mix batch for both views"


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


# -- the released mix partner: another random weak view of the same image ----------------------

SAME_IMAGE = {"unsup": {"weight": 0.5, "supervised_weight": 0.5},
              "data": {"crop": 24},  # crops of the 32 px embedded images: two views differ
              "plugins": {"unimatch": {"mix_partner": "same_image", "pseudo_labels": "student_train",
                                       "p_cutmix": 1},
                          "confidence_threshold": {"threshold": 0.2}}}


def windows_of(full, crop):
    """Every crop x crop window of ``full`` ``[3,H,W]``, unflipped and flipped."""
    h, w = full.shape[-2:]
    return [v for t in range(h - crop + 1) for l in range(w - crop + 1)
            for v in (full[:, t:t + crop, l:l + crop], full[:, t:t + crop, l:l + crop].flip(-1))]


def test_the_second_view_is_another_crop_of_the_same_image_and_leaves_the_first_unchanged(tiny):
    dataset = build_data(tiny(SAME_IMAGE).data).unlabeled
    paired, single = SeededSamples(dataset, second_view=True), SeededSamples(dataset)
    for index, seed in ((0, 11), (5, 12)):
        sample = paired[(index, seed)]
        assert torch.equal(sample["image"], single[(index, seed)]["image"])  # first view as without it
        full = dataset.images[int(dataset.indices[index])].float() / 255
        first, second = sample["image"], sample["second"]["image"]
        assert any(torch.equal(second, v) for v in windows_of(full, 24)) and not torch.equal(first, second)


def test_same_image_partner_is_the_second_view_labelled_like_the_released_code(tiny):
    trainer = Trainer(build_run(tiny(SAME_IMAGE)))
    labeled, unlabeled = next(trainer.batches())
    second = unlabeled.second
    assert second is not None and second.image.shape == unlabeled.image.shape
    student = trainer.run.student.eval()
    with torch.no_grad():
        mix_pseudo = Pseudo.from_logits(student(second.image), second.valid)  # released: eval mode on u_w_mix
    student.train()
    relabeled = trainer.step(labeled, unlabeled, until="relabel")
    assert torch.equal(relabeled.second_pseudo.labels, mix_pseudo.labels)
    own = Pseudo.from_logits(relabeled.outputs.weak, unlabeled.valid)  # released: the train-mode forward of cat(x, u_w)
    for name in ("s1", "s2"):
        plan, view = relabeled.views[name].plan, relabeled.views[name]
        assert plan.mixes[0].donor == "second" and plan.mixes[0].partner.tolist() == [0, 1]
        box = plan.mixes[0].box
        assert box.any() and not box.all()
        donor = plan.mixes[0].donor_photometric(second.image)
        assert torch.equal(view.image.permute(1, 0, 2, 3)[:, box], donor.permute(1, 0, 2, 3)[:, box])
        for field in ("labels", "conf", "valid"):
            got = getattr(view.pseudo, field)
            assert torch.equal(got[box], getattr(mix_pseudo, field)[box])
            assert torch.equal(got[~box], getattr(own, field)[~box])


def test_a_plan_pasting_from_a_second_view_nobody_requested_is_refused():
    batch = UnlabeledBatch(image=torch.zeros(1, 3, 2, 2), valid=torch.ones(1, 2, 2, dtype=torch.bool))
    labeled = LabeledBatch(image=batch.image, mask=torch.zeros(1, 2, 2, dtype=torch.long))
    plan = AugmentationPlan(mixes=(CutMix(torch.ones(1, 2, 2, dtype=torch.bool), torch.zeros(1, dtype=torch.long),
                                          donor="second"),))
    check = HOOKS["schedule_augmentation"].check
    kwargs = {"view": View("s"), "labeled": labeled}
    assert "FeatureRequest(second_view=True)" in check(plan, {"unlabeled": batch, **kwargs})
    with_second = UnlabeledBatch(image=batch.image, valid=batch.valid, second=batch)
    assert check(plan, {"unlabeled": with_second, **kwargs}) is None
