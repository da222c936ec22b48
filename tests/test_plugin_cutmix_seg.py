"""cutmix_seg: the half-area box, the soft consistency on mixed teacher probabilities, the contract."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg_plugins.cutmix_seg import CutMixSeg, half_area_boxes

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


def test_consistency_is_the_squared_error_to_the_mixed_teacher_probabilities(tiny):
    trainer = Trainer(build_run(tiny(RECIPE)))
    run = trainer.run
    labeled, unlabeled = next(trainer.batches())
    result = trainer.step(labeled, unlabeled, until="losses")
    total, terms, lambda_u, outputs = result.total, result.terms, result.lambda_u, result.outputs
    with torch.no_grad():
        view = result.views["mix"]
        box, partner = view.plan.cutmix_box, view.plan.cutmix_partner
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


def test_contract(plugin_contract):
    plugin_contract(CutMixSeg, config={"threshold": 0.5})


pytest_plugins = ["ssseg.testing"]
