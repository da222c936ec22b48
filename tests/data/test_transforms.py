"""The weak pipeline: output size, padding, alignment of image and mask, reproducibility."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.data.transforms import PAD_COLORS, WeakPipeline

geometry = dict(
    h=st.integers(1, 40), w=st.integers(1, 40), crop=st.integers(1, 48),
    lo=st.floats(0.25, 2.5), span=st.floats(0.0, 1.0), flip=st.booleans(), seed=st.integers(0, 2**31),
)


def coordinate_image(h: int, w: int) -> torch.Tensor:
    """Channel 0 holds x / w, channel 1 y / h (float, so resizing interpolates coordinates)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([xx / w, yy / h, torch.full_like(xx, 0.5)])


def run(pipe, image, mask, seed):
    return pipe(image, mask, torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(**geometry)
def test_size_padding_and_alignment(h, w, crop, lo, span, flip, seed):
    pipe = WeakPipeline(crop=crop, scale=(lo, lo + span), flip=flip)
    image = coordinate_image(h, w)
    xs = torch.arange(w).expand(h, w)
    ys = torch.arange(h)[:, None].expand(h, w)
    out, mask_x, valid = run(pipe, image, xs, seed)
    _, mask_y, valid_y = run(pipe, image, ys, seed)  # same seed: same geometry

    assert out.shape == (3, crop, crop) and out.dtype == torch.float32
    assert mask_x.shape == valid.shape == (crop, crop) and mask_x.dtype == torch.int64
    assert valid.dtype == torch.bool and torch.equal(valid, valid_y)
    # padding: not valid, mask ignore, image 0; everything else labeled
    assert bool((mask_x[~valid] == 255).all()) and bool((out[:, ~valid] == 0).all())
    assert bool((mask_x[valid] != 255).all())
    # the mask follows the image: interpolated coordinates agree within a source pixel or so
    tolerance = 1.0 + 1.0 / min(lo, 1.0)
    assert bool(((out[0][valid] * w - mask_x[valid]).abs() <= tolerance).all())
    assert bool(((out[1][valid] * h - mask_y[valid]).abs() <= tolerance).all())


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), crop=st.integers(1, 30), seed=st.integers(0, 2**31))
def test_without_rescale_the_output_is_an_exact_window(h, w, crop, seed):
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    mask = torch.randint(0, 21, (h, w), dtype=torch.uint8)
    out, out_mask, valid = run(WeakPipeline(crop, scale=(1.0, 1.0), flip=False), image, mask, seed)
    rows, cols = valid.any(1).sum(), valid.any(0).sum()
    assert rows == min(h, crop) and cols == min(w, crop)
    window = (out[:, :rows, :cols] * 255).round().to(torch.uint8)
    found = [(t, l) for t in range(h - rows + 1) for l in range(w - cols + 1)
             if torch.equal(image[:, t:t + rows, l:l + cols], window)]
    assert found
    t, l = found[0]
    assert torch.equal(out_mask[:rows, :cols], mask[t:t + rows, l:l + cols].long())


def test_unlabeled_images_have_no_mask():
    image, mask, valid = WeakPipeline(16)(torch.rand(3, 10, 12), None, torch.Generator().manual_seed(0))
    assert image.shape == (3, 16, 16) and mask is None and valid.shape == (16, 16)


def test_global_rng_is_used_without_a_generator():
    pipe, image = WeakPipeline(8), torch.rand(3, 20, 20)
    torch.manual_seed(3)
    a = pipe(image)[0]
    torch.manual_seed(3)
    b = pipe(image)[0]
    assert torch.equal(a, b)


def test_flip_probability_is_about_half():
    pipe = WeakPipeline(4, scale=(1.0, 1.0), flip=True)
    image = coordinate_image(4, 4)
    g = torch.Generator().manual_seed(0)
    flipped = sum(bool(pipe(image, None, g)[0][0, 0, 0] > 0.5) for _ in range(400))
    assert 150 < flipped < 250


def test_imagenet_mean_padding_is_the_released_8_bit_colour_and_stays_invalid():
    # iMAS pads with cv2 border value 255 x (0.485, 0.456, 0.406), cast to uint8: (123, 116, 103)
    assert [round(255 * c) for c in PAD_COLORS["imagenet_mean"]] == [123, 116, 103]
    pipe = WeakPipeline(8, scale=(1.0, 1.0), flip=False, fill=PAD_COLORS["imagenet_mean"])
    for image in (torch.full((3, 5, 6), 200, dtype=torch.uint8), torch.full((3, 5, 6), 200 / 255)):
        out, mask, valid = pipe(image, torch.zeros(5, 6, dtype=torch.uint8), torch.Generator().manual_seed(0))
        assert int(valid.sum()) == 30 and bool((mask[~valid] == 255).all())
        assert torch.equal((out[:, ~valid] * 255).round().T.unique(dim=0), torch.tensor([[123., 116., 103.]]))
        assert bool((out[:, valid] == out[0, valid][0]).all()) and abs(float(out[0, valid][0]) - 200 / 255) < 1e-6
