"""iMAS hardness-weighted loss: the core's view loss with these weights is the paper's L."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.testing import tiny_recipe
from support.resume import assert_resume_is_exact
from support.imas import make_ctx, two_iterations_are_finite
from ssseg.api import AugmentationPlan, CutMix, Pseudo, UnlabeledBatch, View
from support.recipes import view_of_plan
from ssseg.losses import weighted_view_loss
from ssseg.step_table import HOOKS
from ssseg.plugin_manager import instantiate
from ssseg.recipe.structure import ConfigError

TAU = 0.6


def fixed_case(b=3, c=4, h=5, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g)
    labels = torch.randint(c, (b, h, w), generator=g)
    conf = torch.rand(b, h, w, generator=g)
    hardness = torch.rand(b, generator=g)
    pseudo = Pseudo(labels=labels, conf=conf, valid=torch.ones(b, h, w, dtype=torch.bool))
    return logits, pseudo, hardness


def core_loss(logits, pseudo, hardness, view=View("strong"), normalize="valid"):
    """The core's view loss with the weights of confidence_threshold × imas_weighting."""
    ctx = make_ctx()
    answers = [instantiate(k, p).weight_loss(ctx=ctx, view=view, pseudo=pseudo, hardness=hardness)
               for k, p in (("confidence_threshold", {"threshold": TAU}), ("imas_weighting", {}))]
    weight = HOOKS["weight_loss"].combine.apply("weight_loss", answers, {"pseudo": pseudo})
    return weighted_view_loss(logits, pseudo, weight, normalize)


def paper_loss(logits, pseudo, hardness):
    """ℓ_i = (1/(H·W)) Σ_p 1[conf ≥ τ]·CE;  L = (1/B) Σ_i e_i ℓ_i, written out by hand."""
    log_p = logits.log_softmax(1).gather(1, pseudo.labels.unsqueeze(1)).squeeze(1)
    ell = (-(log_p) * (pseudo.conf >= TAU)).mean(dim=(1, 2))
    return ((1 - hardness) * ell).mean()


def test_weighted_loss_equals_the_paper_formula():
    logits, pseudo, hardness = fixed_case()
    assert core_loss(logits, pseudo, hardness).item() == pytest.approx(paper_loss(logits, pseudo, hardness).item(), rel=1e-6)


def test_without_weighting_the_loss_is_the_thresholded_mean_over_all_pixels():
    logits, pseudo, _ = fixed_case()
    assert core_loss(logits, pseudo, torch.zeros(3)).item() == pytest.approx(
        paper_loss(logits, pseudo, torch.zeros(3)).item(), rel=1e-6)


def test_cutmix_view_is_weighted_by_the_receiving_image():
    # Image 0 (e = 1) receives a box from image 1 (e = 0) and vice versa. Only image 0's mixed map
    # counts, its box pixels (labelled by image 1's pseudo-labels) included.
    logits, pseudo, _ = fixed_case(b=2)
    hardness = torch.tensor([0.0, 1.0])
    box = torch.zeros(2, 5, 6, dtype=torch.bool)
    box[:, 1:4, 2:5] = True
    weak = UnlabeledBatch(torch.rand(2, 3, 5, 6), pseudo.valid)
    _, mixed = view_of_plan(AugmentationPlan(mixes=(CutMix(box, torch.tensor([1, 0])),)), weak, pseudo)
    loss = core_loss(logits, mixed, hardness, View("cutmix", 0.5))
    assert loss.item() == pytest.approx(paper_loss(logits, mixed, hardness).item(), rel=1e-6)
    only_0 = paper_loss(logits[:1], Pseudo(mixed.labels[:1], mixed.conf[:1], mixed.valid[:1]), torch.zeros(1)) / 2
    assert loss.item() == pytest.approx(only_0.item(), rel=1e-6)


def test_padded_crops_need_pixels_normalisation_to_equal_the_released_loss():
    # a hand-made batch of 2 images of 2 x 2 pixels, 2 classes; image 1's right column is padding
    logits = torch.tensor([[[[2., 0.], [0., 1.]], [[0., 0.], [1., 0.]]],
                           [[[1., 3.], [0., 2.]], [[0., 0.], [2., 0.]]]])
    labels = torch.tensor([[[0, 1], [1, 0]], [[0, 0], [1, 0]]])
    conf = torch.tensor([[[0.9, 0.7], [0.5, 0.8]], [[0.9, 0.9], [0.9, 0.9]]])
    valid = torch.tensor([[[True, True], [True, True]], [[True, False], [True, False]]])
    pseudo, hardness = Pseudo(labels, conf, valid), torch.tensor([0.5, 0.0])
    ce = -logits.log_softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1)
    w = (conf >= TAU) * torch.tensor([0.5, 1.0]).view(2, 1, 1)  # 1[conf ≥ τ] · e_i
    # iMAS: per image the mean over its H·W = 4 pixels (padding included), then the mean over B
    released = (w * ce).sum((1, 2)).div(4).mean()
    assert core_loss(logits, pseudo, hardness, normalize="pixels").item() == pytest.approx(released.item(), rel=1e-6)
    assert released.item() == pytest.approx(paper_loss(logits, pseudo, hardness).item(), rel=1e-6)
    # the default leaves the 2 padding pixels out of the sum and the count: Σ over 6 valid pixels / 6
    default = (w * ce * valid).sum() / 6
    assert core_loss(logits, pseudo, hardness).item() == pytest.approx(default.item(), rel=1e-6)
    assert abs(default.item() - released.item()) > 1e-3


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=6))
def test_weights_are_easiness_per_instance_without_gradient(gammas):
    hardness = torch.tensor(gammas, requires_grad=True)
    weight = instantiate("imas_weighting", {}).weight_loss(
        ctx=make_ctx(), view=View("strong"), pseudo=None, hardness=hardness)
    assert weight.shape == hardness.shape and not weight.requires_grad
    assert torch.allclose(weight, 1 - hardness.detach())


def test_config_has_no_parameters():
    instantiate("imas_weighting", {})
    with pytest.raises(ConfigError, match="plugins.imas_weighting.normalise: unknown key"):
        instantiate("imas_weighting", {"normalise": True})


# Composed with another strategy: FixMatch's views weighted by iMAS's easiness (wsIoU needs an EMA teacher).
ON_FIXMATCH = {"mean_teacher": {}, "fixmatch": {}, "confidence_threshold": {"threshold": 0.3},
               "imas_hardness": {"threshold": 0.3}, "imas_weighting": {}}


def test_two_iterations_on_fixmatch_are_finite():
    assert "loss_u/strong" in two_iterations_are_finite(ON_FIXMATCH)


def test_resume_continues_exactly(tmp_path):
    assert_resume_is_exact(tiny_recipe({"optim": {"iters": 4}, "plugins": ON_FIXMATCH}), tmp_path)
