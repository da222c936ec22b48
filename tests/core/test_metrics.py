"""Dataset-level mIoU and the two evaluation modes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.engine.evaluate import evaluate, predict, sliding_probs, window_spans, window_starts
from ssseg.metrics import ConfusionMatrix
from ssseg.recipe.schema import EvalConfig


def test_miou_is_dataset_level_and_excludes_absent_classes():
    cm = ConfusionMatrix(4)
    # image 1: class 0 right on 2 px, class 1 predicted as 0 on 1 px; ignore pixel skipped
    cm.update(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 255]))
    # image 2: class 1 right on 1 px, class 2 predicted as 1 on 1 px
    cm.update(torch.tensor([1, 1]), torch.tensor([1, 2]))
    iou = cm.iou()
    assert iou[0] == pytest.approx(2 / 3)  # I=2, U=3 (pred 0 on 3 px, gt 0 on 2 px)
    assert iou[1] == pytest.approx(1 / 3)  # I=1, U = gt{2} + pred{2} - 1 = 3
    assert iou[2] == 0.0  # present in ground truth, never predicted
    assert iou[3] is None  # absent from both: no IoU, never counted as 1
    assert cm.miou() == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)


def test_out_of_range_target_is_an_error():
    with pytest.raises(ValueError, match="class 7 but there are 3 classes"):
        ConfusionMatrix(3).update(torch.tensor([0]), torch.tensor([7]))


@given(st.integers(1, 50), st.integers(1, 20), st.integers(1, 20))
def test_windows_cover_the_image(size, window, stride):
    starts = window_starts(size, window, stride)
    covered = torch.zeros(size, dtype=torch.bool)
    for s in starts:
        covered[s: s + window] = True
    assert covered.all() and all(0 <= s and s + min(window, size) <= size for s in starts)


class Conv(torch.nn.Module):
    """A position-independent model: sliding windows must agree with the whole image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)


@settings(max_examples=20, deadline=None)
@given(st.integers(8, 24), st.integers(8, 24))
def test_sliding_window_equals_whole_image_when_the_window_covers_it(h, w):
    image = torch.rand(3, h, w)
    model = Conv()
    whole = predict(model, image, EvalConfig(mode="whole"), crop=32, num_classes=4)
    sliding = predict(model, image, EvalConfig(mode="sliding", window=32), crop=32, num_classes=4)
    assert torch.equal(whole, sliding)


def test_sliding_window_sums_softmax_over_overlaps():
    image = torch.rand(3, 10, 10)
    total = sliding_probs(Conv(), image, window=6, stride=4, num_classes=4)
    # every pixel is covered at least once; overlapping pixels sum several softmaxes
    counts = total.sum(0)
    assert counts.min() >= 1 - 1e-5 and counts.max() > 1.5


@pytest.mark.parametrize("window_batch, forwards", [(None, 9), (1, 9), (4, 3), (16, 1)])
def test_sliding_window_batch_sets_windows_per_forward_not_the_result(window_batch, forwards):
    image = torch.rand(3, 16, 16)  # 3 x 3 windows of 8 with stride 4
    model, batches = Conv(), []
    model.register_forward_hook(lambda m, inputs, out: batches.append(inputs[0].shape[0]))
    cfg = EvalConfig(mode="sliding", window=8, stride=4, window_batch=window_batch)
    pred = predict(model, image, cfg, crop=8, num_classes=4)
    assert len(batches) == forwards and sum(batches) == 9  # default on a CPU: one window a forward
    reference = sliding_probs(Conv(), image, window=8, stride=4, num_classes=4, batch=1).argmax(0)
    assert torch.equal(pred, reference)


def sliding_evaluation(**kwargs):
    """A sliding evaluation of 3 images of 10², 4 windows of 6 each (stride 4, one per forward)."""
    data = [{"image": torch.rand(3, 10, 10), "mask": torch.zeros(10, 10, dtype=torch.long)} for _ in range(3)]
    cfg = EvalConfig(mode="sliding", window=6, stride=4, window_batch=2)
    return evaluate(Conv(), data, cfg, crop=6, num_classes=4, ignore_index=255, device=torch.device("cpu"),
                    desc="eval student", **kwargs)


def test_evaluation_progress_counts_images_and_windows_with_an_eta(monkeypatch, capsys):
    monkeypatch.setenv("SSSEG_PROGRESS", "plain")
    sliding_evaluation(progress_every_s=0)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("eval student: 0/3 images (0%), windows 2")  # within the first image
    assert lines[2].startswith("eval student: 1/3 images (33%), windows 4, ") and "eta" in lines[2]
    assert lines[-1].startswith("eval student: 3/3 images (100%), windows 12, ")


def test_a_short_evaluation_prints_nothing(monkeypatch, capsys):
    monkeypatch.setenv("SSSEG_PROGRESS", "plain")
    sliding_evaluation()
    assert capsys.readouterr().err == ""


def released_windows(h: int, w: int, window: int) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of every window, as the released iMAS and UniMatch evaluation
    loops walk the image: rows and columns from 0 in steps of int(window·2/3) while inside the image,
    each window cut at the border."""
    step, boxes, row = int(window * 2 / 3), [], 0
    while row < h:
        col = 0
        while col < w:
            boxes.append((row, min(h, row + window), col, min(w, col + window)))
            col += step
        row += step
    return boxes


def spans_to_boxes(h: int, w: int, window: int, stride: int, tiling: str) -> list[tuple[int, int, int, int]]:
    return [(y0, y1, x0, x1) for y0, y1 in window_spans(h, window, stride, tiling)
            for x0, x1 in window_spans(w, window, stride, tiling)]


@pytest.mark.parametrize("window", [769, 801])
def test_released_tiling_is_the_released_loop_on_cityscapes(window):
    stride = window * 2 // 3  # EvalConfig's default stride: 512 at 769, 534 at 801
    released = spans_to_boxes(1024, 2048, window, stride, "released")
    assert released == released_windows(1024, 2048, window)
    assert len(released) == 8 and released[-1] == (stride, 1024, 3 * stride, 2048)  # truncated corner
    shifted = spans_to_boxes(1024, 2048, window, stride, "shifted")  # full windows, the last moved in
    assert shifted[-1] == (1024 - window, 1024, 2048 - window, 2048) and shifted != released


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 60), w=st.integers(1, 60), window=st.integers(2, 40))
def test_released_tiling_follows_the_loop_for_any_size(h, w, window):
    assert spans_to_boxes(h, w, window, int(window * 2 / 3), "released") == released_windows(h, w, window)


def test_released_tiling_sums_every_window_including_truncated_ones():
    image = torch.rand(3, 10, 13)
    total = sliding_probs(Conv(), image, window=6, stride=4, num_classes=4, tiling="released")
    counts = torch.zeros(10, 13)
    for y0, y1, x0, x1 in released_windows(10, 13, 6):
        counts[y0:y1, x0:x1] += 1
    torch.testing.assert_close(total.sum(0), counts)
