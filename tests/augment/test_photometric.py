"""Batched photometric ops against per-image PIL references, plans, blend and batching properties.

Tolerances are in 0..255 levels: exact (float round-off only) where PIL's integer arithmetic has a
float equivalent (invert, equalize, posterize, solarize); below one level where PIL truncates its
blend or LUT to uint8 (autocontrast, brightness); 1.5 levels where PIL also rounds its grayscale
or smoothing image to uint8 first (contrast, color, sharpness); 3 levels for the blur (PIL rounds to
uint8 after each of its six box passes); hue is exact against torchvision and within 16 levels of
PIL, which stores H, S and V in 8 bits each and shifts H by a truncated ``uint8(shift * 255)``.
On a CPU, equalize, posterize and solarize run on uint8 levels, within half a level of the float op.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from ssseg.augment import OP_NAMES, PhotometricPlan, apply_plan, blend, op_id
from ssseg.augment import photometric as P
from ssseg.augment import sample_fixmatch_plan, sample_imas_plan


def _pil_hue(image: Image.Image, shift: float) -> Image.Image:
    """The released iMAS hue op: add uint8(shift * 255) to PIL's 8-bit HSV hue."""
    hue, sat, val = image.convert("HSV").split()
    shifted = (np.asarray(hue, dtype=np.int64) + int(shift * 255)) % 256
    return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), sat, val)).convert("RGB")


# op name -> (PIL reference taking the concrete parameter, parameter strategy, tolerance in levels)
PIL_REFERENCE = {
    "identity": (lambda im, p: im, st.just(0.0), 0.0),
    "autocontrast": (lambda im, p: ImageOps.autocontrast(im), st.just(1.0), 1.0),
    "equalize": (lambda im, p: ImageOps.equalize(im), st.just(1.0), 0.0),
    "invert": (lambda im, p: ImageOps.invert(im), st.just(1.0), 0.0),
    "blur": (lambda im, p: im.filter(ImageFilter.GaussianBlur(p)), st.floats(0.1, 2.0), 3.0),
    "contrast": (lambda im, p: ImageEnhance.Contrast(im).enhance(p), st.floats(0.1, 0.95), 1.5),
    "brightness": (lambda im, p: ImageEnhance.Brightness(im).enhance(p), st.floats(0.1, 0.95), 1.0),
    "color": (lambda im, p: ImageEnhance.Color(im).enhance(p), st.floats(0.0, 0.95), 1.5),
    "sharpness": (lambda im, p: ImageEnhance.Sharpness(im).enhance(p), st.floats(0.1, 0.95), 1.5),
    "posterize": (lambda im, p: ImageOps.posterize(im, int(p)), st.integers(4, 8).map(float), 0.0),
    "solarize": (lambda im, p: ImageOps.solarize(im, int(p)), st.integers(2, 256).map(float), 0.0),
    "hue": (_pil_hue, st.floats(-0.5, 0.5), 16.0),
}
ROUND_OFF = 1e-3  # levels
ON_LEVELS = [name for name in OP_NAMES if P._OPS[name].table or P._OPS[name].levels]

small_images = arrays(np.uint8, st.tuples(st.integers(3, 12), st.integers(3, 12), st.just(3)))


def _to_tensor(arrays_hwc: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays_hwc)).permute(0, 3, 1, 2).float() / 255.0


def _to_levels(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).double().numpy() * 255.0


def _random_images(batch: int, height: int = 17, width: int = 23, seed: int = 0) -> torch.Tensor:
    """Random images on the 256 levels, as decoded images are."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(256, (batch, 3, height, width), generator=generator).float() / 255.0


def test_reference_covers_all_twelve_ops():
    assert set(PIL_REFERENCE) == set(OP_NAMES) and len(OP_NAMES) == 12


@pytest.mark.parametrize("name", OP_NAMES)
@settings(max_examples=30, deadline=None)
@given(image=small_images, data=st.data())
def test_op_matches_pil(name, image, data):
    reference, param_strategy, tolerance = PIL_REFERENCE[name]
    param = data.draw(param_strategy)
    expected = np.asarray(reference(Image.fromarray(image), param), dtype=np.float64)[None]
    batch = _to_tensor([image])
    actual = _to_levels(P._OPS[name].apply(batch, torch.tensor([param])))
    assert np.abs(actual - expected).max() <= tolerance + ROUND_OFF


def test_the_lookup_table_ops_measured_faster_run_on_levels():
    assert ON_LEVELS == ["equalize", "posterize", "solarize"]


@pytest.mark.parametrize("name", ON_LEVELS)
@settings(max_examples=30, deadline=None)
@given(image=small_images, weight=st.floats(0.0, 1.0), data=st.data())
def test_op_on_levels_is_the_float_op_rounded(name, image, weight, data):
    param = torch.tensor([weight if name == "equalize" else data.draw(PIL_REFERENCE[name][1])])
    batch = _to_tensor([image])
    actual = P._OPS[name].on_levels(batch, param) * 255.0
    expected = P._OPS[name].apply(batch, param) * 255.0
    assert torch.equal(actual, actual.round()) and (actual - expected).abs().max() <= 0.5 + ROUND_OFF


@pytest.mark.parametrize("sampler", [sample_imas_plan, sample_fixmatch_plan])
def test_plan_on_levels_is_within_half_a_level_of_the_float_path(sampler):
    images = _random_images(64, seed=15)
    plan = sampler(64, torch.Generator().manual_seed(15))
    difference = (apply_plan(images, plan, on_levels=True) - apply_plan(images, plan, on_levels=False)) * 255
    assert difference.abs().max() <= 0.5 + ROUND_OFF


def test_the_cpu_takes_the_levels_path():
    images = _random_images(4, seed=16)
    plan = PhotometricPlan(ops=torch.full((4, 1), op_id("equalize")), params=torch.full((4, 1), 0.5))
    out = apply_plan(images, plan)
    assert torch.equal(out, apply_plan(images, plan, on_levels=True))
    assert torch.equal(out * 255, (out * 255).round())  # equalize at weight 0.5, rounded to levels
    assert not torch.equal(out, apply_plan(images, plan, on_levels=False))


@settings(max_examples=30, deadline=None)
@given(image=small_images, shift=st.floats(-0.5, 0.5))
def test_hue_matches_torchvision(image, shift):
    batch = _to_tensor([image])
    expected = TF.adjust_hue(batch, shift)
    torch.testing.assert_close(P.hue_shift(batch, torch.tensor([shift])), expected, atol=1e-5, rtol=0)


def test_outputs_stay_in_unit_range():
    generator = torch.Generator().manual_seed(1)
    images = torch.cat((_random_images(48), torch.zeros(4, 3, 17, 23), torch.ones(4, 3, 17, 23)))
    for plan in (sample_imas_plan(56, generator, n_ops=3), sample_fixmatch_plan(56, generator)):
        out = apply_plan(images, plan)
        assert out.shape == images.shape and out.min() >= 0.0 and out.max() <= 1.0


def test_zero_magnitude_scale_is_identity():
    images = _random_images(64)
    plan = sample_imas_plan(64, torch.Generator().manual_seed(2), magnitude_scale=torch.zeros(64))
    assert set(plan.ops.unique().tolist()) == set(range(12))
    torch.testing.assert_close(apply_plan(images, plan), images, atol=1e-6, rtol=0)


def test_magnitude_scale_moves_parameters_linearly_toward_identity():
    full = sample_imas_plan(256, torch.Generator().manual_seed(3))
    half = sample_imas_plan(256, torch.Generator().manual_seed(3), magnitude_scale=torch.full((256,), 0.5))
    neutral = torch.tensor([P._OP_LIST[i].neutral for i in range(12)])[full.ops]
    expected = neutral + 0.5 * (full.params - neutral)
    discrete = torch.isin(full.ops, torch.tensor([op_id("posterize"), op_id("solarize")]))
    continuous = ~discrete & (full.ops != op_id("identity"))
    torch.testing.assert_close(half.params[continuous], expected[continuous])
    assert (half.params[discrete] - expected[discrete]).abs().max() <= 0.5


def test_imas_plan_draws_the_spec_ranges():
    plan = sample_imas_plan(4096, torch.Generator().manual_seed(4))
    counts = torch.bincount(plan.ops.flatten(), minlength=12)
    assert counts.min() > 0.8 * 8192 / 12
    params = {name: plan.params[plan.ops == op_id(name)] for name in OP_NAMES}
    assert params["blur"].min() >= 0.1 and params["blur"].max() <= 2.0
    for name in ("contrast", "brightness", "color", "sharpness"):
        assert params[name].min() > 0.1 and params[name].max() <= 0.95
    assert set(params["posterize"].tolist()) == {4.0, 5.0, 6.0, 7.0}
    assert params["solarize"].min() >= 2 and params["solarize"].max() <= 256
    assert params["hue"].abs().max() <= 0.5 and (params["hue"] < 0).any() and (params["hue"] > 0).any()
    for name in ("autocontrast", "equalize", "invert"):
        assert (params[name] == 1.0).all()


def test_fixmatch_plan_probabilities_and_ranges():
    batch = 4096
    plan = sample_fixmatch_plan(batch, torch.Generator().manual_seed(5))
    jitter_ops, jitter_params = plan.ops[:, :4], plan.params[:, :4]
    jittered = (jitter_ops != op_id("identity")).all(dim=1)
    assert ((jitter_ops == op_id("identity")).all(dim=1) | jittered).all()
    assert abs(jittered.float().mean() - 0.8) < 0.03
    expected_set = sorted(op_id(n) for n in ("brightness", "contrast", "color", "hue"))
    assert (jitter_ops[jittered].sort(dim=1).values == torch.tensor(expected_set)).all()
    first_ops = jitter_ops[jittered, 0]
    assert len(first_ops.unique()) == 4  # the order varies per sample
    ranges = (("brightness", 0.5, 1.5), ("contrast", 0.5, 1.5), ("color", 0.5, 1.5), ("hue", -0.25, 0.25))
    for name, low, high in ranges:
        values = jitter_params[jitter_ops == op_id(name)]
        assert values.min() >= low and values.max() <= high
    gray = plan.ops[:, 4] == op_id("color")
    assert abs(gray.float().mean() - 0.2) < 0.03 and (plan.params[gray, 4] == 0).all()
    blurred = plan.ops[:, 5] == op_id("blur")
    assert abs(blurred.float().mean() - 0.5) < 0.03
    assert plan.params[blurred, 5].min() >= 0.1 and plan.params[blurred, 5].max() <= 2.0


@pytest.mark.parametrize("on_levels", [False, True])
@pytest.mark.parametrize("sampler", [sample_imas_plan, sample_fixmatch_plan])
def test_batched_plan_equals_per_sample_chain(sampler, on_levels):
    images = _random_images(24, seed=6)
    plan = sampler(24, torch.Generator().manual_seed(6))
    out = apply_plan(images, plan, on_levels)
    for i in range(24):
        expected = images[i : i + 1]
        for op, param in zip(plan.ops[i].tolist(), plan.params[i].tolist()):
            spec = P._OP_LIST[op]
            apply = spec.on_levels if on_levels and OP_NAMES[op] in ON_LEVELS else spec.apply
            expected = apply(expected, torch.tensor([param]))
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("on_levels", [False, True])
@pytest.mark.parametrize("sampler", [sample_imas_plan, sample_fixmatch_plan])
def test_samples_are_independent_of_the_batch(sampler, on_levels):
    images = _random_images(16, seed=7)
    plan = sampler(16, torch.Generator().manual_seed(7))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(8))
    permuted = PhotometricPlan(ops=plan.ops[perm], params=plan.params[perm])
    expected = apply_plan(images, plan, on_levels)[perm]
    torch.testing.assert_close(apply_plan(images[perm], permuted, on_levels), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("sampler", [sample_imas_plan, sample_fixmatch_plan])
def test_same_seed_same_output(sampler):
    images = _random_images(8, seed=9)
    first = apply_plan(images, sampler(8, torch.Generator().manual_seed(10)))
    second = apply_plan(images, sampler(8, torch.Generator().manual_seed(10)))
    assert torch.equal(first, second)


def test_blend_endpoints_and_per_sample_weights():
    weak, strong = _random_images(3, seed=11), _random_images(3, seed=12)
    assert torch.equal(blend(weak, strong, torch.zeros(3)), weak)
    assert torch.equal(blend(weak, strong, torch.ones(3)), strong)
    mixed = blend(weak, strong, torch.tensor([0.0, 0.25, 1.0]))
    assert torch.equal(mixed[0], weak[0]) and torch.equal(mixed[2], strong[2])
    torch.testing.assert_close(mixed[1], 0.25 * strong[1] + 0.75 * weak[1])


@pytest.mark.cuda
def test_cuda_matches_cpu():
    images = _random_images(16, seed=13)
    generator = torch.Generator().manual_seed(14)
    for plan in (sample_imas_plan(16, generator), sample_fixmatch_plan(16, generator)):
        on_gpu = apply_plan(images.cuda(), plan).cpu()  # the float path
        torch.testing.assert_close(on_gpu, apply_plan(images, plan, on_levels=False), atol=1e-5, rtol=0)
