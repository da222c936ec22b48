"""Test-time augmentation (``eval.tta``): the mean of the flipped and rescaled views' softmax,
computed here by hand; without it, the plain prediction bit for bit; the recipe key's checks; and
the one ``predict`` path that training's evaluations, ``ssseg eval`` and ``ssseg predict`` use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssseg.engine.evaluate import (predict, predict_scores, probabilities, sliding_probs, tta_probs,
                                   window_spans)
from ssseg.engine.evaluator import Evaluator
from ssseg.engine.run import build_run
from ssseg.recipe.schema import EvalConfig, TTAConfig
from ssseg.recipe.structure import ConfigError
from ssseg.pictures import predict_mask
from ssseg.testing import tiny_recipe

CLASSES = 4
SCALES = (0.75, 1.0, 1.25)


class Lopsided(torch.nn.Module):
    """A 3×3 convolution plus a left-to-right ramp per class: its output changes under a flip and
    with the image's size, so a view that is not flipped back or not rescaled shows."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, CLASSES, 3, padding=1)
        self.ramp = torch.nn.Parameter(torch.randn(CLASSES, 1, 1) * 3)
        self.sizes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape))
        return self.conv(x) + self.ramp * torch.linspace(-1, 1, x.shape[-1])


def by_hand(model, image, scales, flip, view_probs):
    """The mean over scales (and flips) of ``view_probs(model, view)`` ``[C,h,w]``, each view
    resized from the image and its probabilities resized back, one view at a time."""
    _, h, w = image.shape
    views = []
    for scale in scales:
        size = (int(h * scale + 0.5), int(w * scale + 0.5))
        x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        probs = [view_probs(model, x)] + ([view_probs(model, x.flip(2)).flip(2)] if flip else [])
        views += [F.interpolate(p[None], size=(h, w), mode="bilinear", align_corners=False)[0] for p in probs]
    return torch.stack(views).mean(0)


def whole_probs(model, x):
    return model(x[None])[0].softmax(0)


def window_counts(h, w, window, stride):
    counts = torch.zeros(h, w)
    for y0, y1 in window_spans(h, window, stride):
        for x0, x1 in window_spans(w, window, stride):
            counts[y0:y1, x0:x1] += 1
    return counts


def sliding_view_probs(model, x):
    """The softmax averaged over the windows covering each pixel (window 8, stride 4)."""
    return sliding_probs(model, x, 8, 4, CLASSES) / window_counts(*x.shape[1:], 8, 4)


@pytest.mark.parametrize("flip", [True, False])
def test_whole_image_tta_is_the_mean_of_the_rescaled_and_flipped_softmax(flip):
    image, model = torch.rand(3, 10, 14), Lopsided()
    cfg = EvalConfig(mode="whole", tta=TTAConfig(flip=flip, scales=SCALES))
    with torch.no_grad():
        expected = by_hand(model, image, SCALES, flip, whole_probs)
    model.sizes.clear()
    probs = tta_probs(model, image[None], cfg, crop=8, num_classes=CLASSES)[0]
    # one forward per scale, the flipped image in the same batch; sizes rounded half up as MMSeg
    assert model.sizes == [(1 + flip, 3, 8, 11), (1 + flip, 3, 10, 14), (1 + flip, 3, 13, 18)]
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.equal(predict(model, image, cfg, crop=8, num_classes=CLASSES), expected.argmax(0))
    # the views disagree: a prediction that skips one of them is another prediction
    assert not torch.allclose(expected, whole_probs(model, image), atol=1e-2)


def test_sliding_window_tta_averages_each_views_window_probabilities():
    image, model = torch.rand(3, 12, 12), Lopsided()
    cfg = EvalConfig(mode="sliding", window=8, stride=4, tta=TTAConfig(flip=True, scales=SCALES))
    with torch.no_grad():
        expected = by_hand(model, image, SCALES, True, sliding_view_probs)
    probs = tta_probs(model, image[None], cfg, crop=8, num_classes=CLASSES)[0]
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.equal(predict(model, image, cfg, crop=8, num_classes=CLASSES), expected.argmax(0))


@pytest.mark.parametrize("mode", ["whole", "sliding"])
def test_a_batch_is_predicted_as_its_images_one_by_one(mode):
    images, model = torch.rand(3, 3, 12, 12), Lopsided()
    cfg = EvalConfig(mode=mode, window=8, stride=4, tta=TTAConfig(flip=True, scales=(0.5, 1.0)))
    batch = tta_probs(model, images, cfg, crop=8, num_classes=CLASSES)
    one_by_one = torch.cat([tta_probs(model, image[None], cfg, crop=8, num_classes=CLASSES) for image in images])
    assert torch.allclose(batch, one_by_one, atol=1e-6)


def test_without_tta_the_prediction_is_the_plain_one_bit_for_bit():
    images, model = torch.rand(2, 3, 12, 12), Lopsided()
    assert not EvalConfig().tta.active and not TTAConfig(flip=False, scales=(1.0,)).active
    with torch.no_grad():
        logits = model(images)
    whole = EvalConfig(mode="whole")
    assert torch.equal(predict_scores(model, images, whole, crop=8, num_classes=CLASSES), logits)
    assert torch.equal(predict(model, images[0], whole, crop=8, num_classes=CLASSES), logits[0].argmax(0))
    sliding = EvalConfig(mode="sliding", window=8, stride=4)
    summed = sliding_probs(model, images[0], 8, 4, CLASSES, batch=1)  # one window a forward on a CPU
    assert torch.equal(predict_scores(model, images[:1], sliding, crop=8, num_classes=CLASSES)[0], summed)
    assert torch.allclose(probabilities(summed[None], sliding)[0], sliding_view_probs(model, images[0]))
    assert torch.allclose(probabilities(logits, whole), logits.softmax(1))


@pytest.mark.parametrize("scales, problem", [
    ([], "it is empty"), ([1.0, 0.0], "0.0 is not a finite number > 0"),
    ([-0.5], "-0.5 is not a finite number > 0"), ([0.75, 1, 0.75], "0.75 appears twice"),
    ([1.0, float("nan")], "nan is not a finite number > 0"), ([float("inf")], "inf is not")])
def test_bad_scales_name_the_key_and_what_is_valid(scales, problem):
    with pytest.raises(ConfigError) as err:
        tiny_recipe({"eval": {"tta": {"flip": True, "scales": scales}}})
    assert err.value.path == "eval.tta.scales"
    assert problem in str(err.value) and "valid: a non-empty list of distinct numbers > 0" in str(err.value)


def test_unknown_tta_keys_are_named():
    with pytest.raises(ConfigError, match=r"eval\.tta\.flips: unknown key; valid keys: flip, scales"):
        tiny_recipe({"eval": {"tta": {"flips": True}}})


def test_the_recipe_key_reaches_the_evaluator_and_ssseg_predict():
    recipe = tiny_recipe({"eval": {"max_images": 1, "tta": {"flip": True, "scales": [0.5, 1.0]}}})
    built = build_run(recipe, needs="val")
    sizes = []
    built.run.student.register_forward_hook(lambda m, inputs, out: sizes.append(tuple(inputs[0].shape)))
    Evaluator(built.run, built.plugins).evaluate()  # training's evaluations and ssseg eval
    image = built.run.data.val[0]["image"]
    predict_mask(built.run, built.run.student.eval(), image)  # ssseg predict
    assert sizes == [(2, 3, 16, 16), (2, 3, 32, 32)] * 2
