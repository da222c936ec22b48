"""cutmix_seg: the half-area box and its released corner rule, the soft consistency on mixed
teacher probabilities, the ramp-up and colour options, the contract."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from support.recipes import answer
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.augment.photometric import apply_plan, sample_fixmatch_plan
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.plugin_manager import instantiate
from ssseg_plugins.cutmix_seg import CutMixSeg, half_area_boxes, sigmoid_rampup

RECIPE = {"unsup": {"weight": 1.0, "supervised_weight": 1.0},
          "plugins": {"mean_teacher": {"decay": 0.99, "ramp_up": False}, "cutmix_seg": {"threshold": 0.3}}}


@settings(max_examples=30, deadline=None)
@given(h=st.integers(4, 64), w=st.integers(4, 64), seed=st.integers(0, 2**16))
def test_box_covers_half_the_crop_inside_it(h, w, seed):
    boxes = half_area_boxes(6, (h, w), torch.Generator().manual_seed(seed))
    rows, cols = boxes.any(2).sum(1), boxes.any(1).sum(1)
    assert torch.equal(boxes.sum((1, 2)), rows * cols)                 # one rectangle, not clipped
    assert ((rows >= round(0.5 * h) - 1) & (cols >= round(0.5 * w) - 1)).all()  # both sides ≥ half
    area = (rows * cols).double() / (h * w)  # each side rounded from fractions whose product is 0.5
    assert ((area - 0.5).abs() <= 0.5 / h + 0.5 / w + 0.25 / (h * w) + 1e-9).all()


def released_box(v, t_top, t_left, h, w):
    """The released mask_gen.py box of one image from its draws v, t (numpy): sizes
    round(fraction·side), corners round((side − size)·t); rows, columns as ranges."""
    height, width = np.round(np.array([0.5 ** v, 0.5 / 0.5 ** v]) * np.array([h, w]))
    top, left = np.round((np.array([h, w]) - [height, width]) * [t_top, t_left])
    return range(int(top), int(top + height)), range(int(left), int(left + min(width, w)))


@pytest.mark.parametrize("h, w", [(321, 321), (33, 17), (8, 64)])
def test_box_corners_round_like_the_released_mask_generator(h, w):
    g = torch.Generator().manual_seed(3)
    boxes = half_area_boxes(400, (h, w), g)
    v, t_top, t_left = torch.rand(3, 400, generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    for i in range(400):
        rows, cols = released_box(v[i], t_top[i], t_left[i], h, w)
        expected = np.zeros((h, w), bool)
        expected[rows.start:rows.stop, cols.start:cols.stop] = True
        assert np.array_equal(boxes[i].numpy(), expected), i
    uniform = half_area_boxes(400, (h, w), torch.Generator().manual_seed(3), corners="uniform")
    n = h - uniform.any(2).sum(1).numpy()
    assert np.array_equal(uniform.any(2).int().argmax(1).numpy(), np.floor((n + 1) * t_top).astype(int))


def test_released_corners_give_the_border_positions_half_weight():
    """round((n)·t): P(0) = P(n) = 1/(2n); ⌊(n + 1)·t⌋: 1/(n + 1) each (n = H − height)."""
    g = torch.Generator().manual_seed(0)
    boxes = half_area_boxes(200_000, (4, 2048), g)  # height round(0.5^v · 4) = 2 or 3 (n = 2 or 1)
    height, top = boxes.any(2).sum(1), boxes.any(2).int().argmax(1)
    two = top[height == 2]  # n = 2: positions 0, 1, 2 with 1/4, 1/2, 1/4
    share = torch.bincount(two, minlength=3).double() / len(two)
    torch.testing.assert_close(share, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64), atol=0.01, rtol=0)


def test_consistency_is_the_squared_error_to_the_mixed_teacher_probabilities(tiny):
    trainer = Trainer(build_run(tiny(RECIPE)))
    run = trainer.run
    labeled, unlabeled = next(trainer.batches())
    result = trainer.step(labeled, unlabeled, until="losses")
    total, terms, lambda_u, outputs = result.total, result.terms, result.lambda_u, result.outputs
    with torch.no_grad():
        view = result.views["mix"]
        box, partner = view.plan.mixes[0].box, view.plan.mixes[0].partner
        assert not torch.equal(partner, torch.arange(len(partner)))      # never an image with itself
        teacher_logits = run.teacher.eval()(unlabeled.image)
        mixed = torch.where(box[:, None], teacher_logits[partner], teacher_logits)
        p_t, p_s = mixed.softmax(1), outputs.views["mix"].softmax(1)
        valid = torch.where(box, unlabeled.valid[partner], unlabeled.valid).float()
        q = (p_t.max(1).values >= 0.3).float().mean()
        expected = (valid * q * ((p_s - p_t) ** 2).sum(1)).mean()
    assert torch.allclose(terms["cutmix_seg/cons"], expected, rtol=1e-5, atol=1e-8)
    assert "loss_u/mix" not in terms                                    # coefficient 0: no cross-entropy
    assert torch.allclose(total, terms["loss_x"] + lambda_u * expected, rtol=1e-5)


def test_per_pixel_confidence_option_weights_each_pixel(tiny):
    recipe = tiny({**RECIPE, "plugins": {**RECIPE["plugins"], "cutmix_seg": {"threshold": 0.99, "conf_per_pixel": True}}})
    trainer = Trainer(build_run(recipe))
    terms = trainer.step(*next(trainer.batches()), until="losses").terms
    assert float(terms["cutmix_seg/cons"].detach()) == 0.0  # a fresh teacher is never 99 % confident


def test_rampup_multiplies_the_consistency_by_the_sigmoid_of_the_epoch():
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(7, 5) == 1.0
    assert sigmoid_rampup(0, 4) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(1, 4) == pytest.approx(math.exp(-5 * 0.75 ** 2))
    g = torch.Generator().manual_seed(0)
    p_t = torch.rand(2, 3, 4, 4, generator=g).softmax(1)
    pseudo = SimpleNamespace(probs=p_t, valid=torch.ones(2, 4, 4, dtype=torch.bool))
    views = {"mix": SimpleNamespace(pseudo=pseudo, weight=torch.ones(2, 4, 4))}
    outputs = SimpleNamespace(views={"mix": torch.randn(2, 3, 4, 4)})
    ctx = SimpleNamespace(epoch=1, log=lambda *a: None)
    plain, ramped = (instantiate("cutmix_seg", {"threshold": 0.0, "rampup_epochs": r}).extra_losses(
        ctx=ctx, views=views, outputs=outputs)["cutmix_seg/cons"].value for r in (0, 4))
    torch.testing.assert_close(ramped, plain * math.exp(-5 * 0.75 ** 2))


def test_the_plugin_draws_the_released_corners_by_default():
    batch = SimpleNamespace(image=torch.rand(64, 3, 9, 40))
    ctx = SimpleNamespace(generator=torch.Generator().manual_seed(2), device=torch.device("cpu"))
    plan = answer(instantiate("cutmix_seg", {}), "schedule_augmentation", ctx=ctx, view=None, unlabeled=batch)
    g = torch.Generator().manual_seed(2)
    torch.randint(1, 64, (), generator=g)
    assert torch.equal(plan.mixes[0].box, half_area_boxes(64, (9, 40), g, corners="released"))
    g = torch.Generator().manual_seed(2)
    torch.randint(1, 64, (), generator=g)
    assert not torch.equal(plan.mixes[0].box, half_area_boxes(64, (9, 40), g, corners="uniform"))


def test_colour_option_jitters_the_students_view_as_the_later_run_scripts():
    batch = SimpleNamespace(image=torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    ctx = SimpleNamespace(generator=torch.Generator().manual_seed(5), device=torch.device("cpu"))
    assert answer(instantiate("cutmix_seg", {}), "schedule_augmentation", ctx=ctx, view=None, unlabeled=batch).photometric is None
    ctx.generator.manual_seed(5)
    plan = answer(instantiate("cutmix_seg", {"colour": True}), "schedule_augmentation", ctx=ctx, view=None, unlabeled=batch)
    g = torch.Generator().manual_seed(5)  # the same draws: the partner shift, the boxes, then the colour
    torch.randint(1, 4, (), generator=g)
    half_area_boxes(4, (16, 16), g)
    expected = apply_plan(batch.image, sample_fixmatch_plan(4, g, jitter=(0.4, 0.4, 0.4, 0.1), p_jitter=0.8,
                                                            p_gray=0.2, p_blur=0.0))
    torch.testing.assert_close(plan.photometric(batch.image), expected)
    assert not torch.equal(expected, batch.image)


@pytest.mark.parametrize("options", [{}, {"colour": True, "rampup_epochs": 2, "corners": "uniform"}],
                         ids=["default", "options"])
def test_contract(plugin_contract, options):
    plugin_contract(CutMixSeg, config={"threshold": 0.5, **options})


pytest_plugins = ["ssseg.testing"]
