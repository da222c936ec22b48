"""CutMix boxes, iMAS hard<->easy pairing and mixing of images, labels, confidences and validity."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.augment import box_masks, fixmatch_boxes, hard_easy_partners, imas_boxes, mix, mix_from


def _extents(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns touched by each box, asserting each non-empty box is a full rectangle."""
    rows, cols = boxes.any(dim=2).sum(dim=1), boxes.any(dim=1).sum(dim=1)
    assert torch.equal(boxes.sum(dim=(1, 2)), rows * cols)
    return rows, cols


def _coordinate_images(batch: int, height: int, width: int) -> torch.Tensor:
    """Image whose channels hold (sample index, row, column) of every pixel."""
    sample = torch.arange(batch).view(batch, 1, 1).expand(batch, height, width)
    row = torch.arange(height).view(1, height, 1).expand(batch, height, width)
    col = torch.arange(width).view(1, 1, width).expand(batch, height, width)
    return torch.stack((sample, row, col), dim=1).float()


def test_box_masks_match_slicing_and_clip():
    top, left = torch.tensor([2, -3, 5]), torch.tensor([1, 4, 6])
    boxes = box_masks(top, left, torch.tensor([3, 5, 9]), torch.tensor([4, 2, 9]), (8, 10))
    expected = torch.zeros(3, 8, 10, dtype=torch.bool)
    expected[0, 2:5, 1:5] = True
    expected[1, 0:2, 4:6] = True
    expected[2, 5:8, 6:10] = True
    assert torch.equal(boxes, expected)


def test_fixmatch_boxes_probability_area_and_aspect():
    height, width, batch = 80, 96, 1000
    boxes = fixmatch_boxes(batch, (height, width), torch.Generator().manual_seed(0))
    rows, cols = _extents(boxes)
    present = rows > 0
    assert abs(present.float().mean() - 0.5) < 0.06
    area = (rows * cols)[present].float() / (height * width)
    assert area.max() <= 0.4 and area.min() >= 0.8 * 0.02  # int() truncation of both sides
    aspect = rows[present].float() / cols[present].float()
    assert aspect.min() >= 0.3 * 0.8 and aspect.max() <= (1 / 0.3) * 1.25
    assert aspect.min() < 0.5 and aspect.max() > 2.0


def test_fixmatch_boxes_respect_p():
    generator = torch.Generator().manual_seed(1)
    assert not fixmatch_boxes(16, (32, 32), generator, p=0.0).any()
    assert fixmatch_boxes(16, (32, 32), generator, p=1.0).any(dim=(1, 2)).all()


def test_imas_boxes_share_one_side_ratio_and_clip_at_the_border():
    height, width, batch = 90, 120, 256
    boxes = imas_boxes(batch, (height, width), torch.Generator().manual_seed(2))
    rows, cols = _extents(boxes)
    assert (rows > 0).all()
    full_rows, full_cols = rows.max().item(), cols.max().item()  # unclipped boxes: int(H v), int(W v)
    ratio = full_rows / height
    assert 0.1 - 1 / height <= ratio < 0.9 and abs(full_cols - width * ratio) <= width / height + 1
    edges = (boxes[:, 0, :], boxes[:, -1, :], boxes[:, :, 0], boxes[:, :, -1])
    touches_border = torch.stack([edge.any(dim=1) for edge in edges]).any(dim=0)
    assert ((rows == full_rows) & (cols == full_cols) | touches_border).all()
    top_rows = boxes.any(dim=2).float().argmax(dim=1)
    assert (top_rows + rows > height // 16).all()  # centre row >= int(H / 16)


def test_same_seed_same_boxes():
    for make in (fixmatch_boxes, imas_boxes):
        first = make(8, (40, 50), torch.Generator().manual_seed(3))
        assert torch.equal(first, make(8, (40, 50), torch.Generator().manual_seed(3)))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]), min_size=1, max_size=17))
def test_partners_pair_rank_k_with_rank_b_minus_1_minus_k(values):
    easiness = torch.tensor(values)
    partner = hard_easy_partners(easiness)
    ranked = sorted(range(len(values)), key=lambda i: values[i])  # stable, like the implementation
    for k, sample in enumerate(ranked):
        assert partner[sample] == ranked[len(values) - 1 - k]
    assert torch.equal(partner[partner], torch.arange(len(values)))
    assert torch.equal(partner.sort().values, torch.arange(len(values)))


def test_mix_moves_every_tensor_with_the_same_box():
    batch, height, width = 5, 12, 16
    generator = torch.Generator().manual_seed(4)
    images = _coordinate_images(batch, height, width)
    labels = images[:, 0].long() * 10_000 + images[:, 1].long() * 100 + images[:, 2].long()
    confidence = images[:, 0] / batch
    valid = torch.rand(batch, height, width, generator=generator) < 0.5
    boxes = imas_boxes(batch, (height, width), generator)
    partner = hard_easy_partners(torch.rand(batch, generator=generator))
    mixed = mix(boxes, partner, images, labels, confidence, valid)
    mixed_images, mixed_labels, mixed_conf, mixed_valid = mixed
    source = torch.where(boxes, partner.view(-1, 1, 1), torch.arange(batch).view(-1, 1, 1))
    assert torch.equal(mixed_images[:, 0].long(), source)
    assert torch.equal(mixed_images[:, 1:], images[:, 1:])  # same location in the donor
    assert torch.equal(mixed_labels, source * 10_000 + images[:, 1].long() * 100 + images[:, 2].long())
    assert torch.equal(mixed_conf, source.float() / batch)
    assert torch.equal(mixed_valid, torch.where(boxes, valid[partner], valid))
    assert not (mixed_valid & ~boxes & ~valid).any()  # invalid stays invalid outside the box


def test_mix_from_takes_a_donor_batch():
    generator = torch.Generator().manual_seed(5)
    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand(4, 3, 10, 10, generator=generator), torch.randint(0, 21, (4, 10, 10), generator=generator)

    receivers, donors = batch(), batch()
    boxes = fixmatch_boxes(4, (10, 10), generator, p=1.0)
    image, label = mix_from(boxes, donors, receivers)
    assert torch.equal(image, torch.where(boxes.unsqueeze(1), donors[0], receivers[0]))
    assert torch.equal(label, torch.where(boxes, donors[1], receivers[1]))
    identity = torch.arange(4)
    assert torch.equal(mix(boxes, identity, receivers[0])[0], receivers[0])
