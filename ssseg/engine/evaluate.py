"""Validation: whole-image or sliding-window inference and dataset-level mIoU."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ssseg.engine.distributed import all_reduce_sum_, broadcast_buffers_, rank_and_world
from ssseg.metrics import ConfusionMatrix
from ssseg.models import eval_mode
from ssseg.progress import Progress
from ssseg.recipe.schema import EvalConfig


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels every ``stride`` (at most ``window``, so
    no pixel is skipped) covering ``size``."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window, min(stride, window)))
    return starts + [size - window]


def window_spans(size: int, window: int, stride: int, tiling: str = "shifted") -> list[tuple[int, int]]:
    """(start, end) of the windows along one side of ``size`` pixels. ``shifted``: windows of
    min(window, size) pixels every ``stride``, the last one shifted inward to end at the border
    (:func:`window_starts`); ``released`` (the iMAS and UniMatch evaluation): a window starts every
    ``stride`` pixels from 0 while the start is inside the image, and windows crossing the border
    are truncated there."""
    if tiling == "released":
        return [(start, min(start + window, size)) for start in range(0, size, stride)]
    window = min(window, size)
    return [(start, start + window) for start in window_starts(size, window, stride)]


@torch.no_grad()
def sliding_probs(model: nn.Module, image: Tensor, window: int, stride: int, num_classes: int,
                  batch: int = 8, tiling: str = "shifted",
                  on_windows: Callable[[int], None] | None = None) -> Tensor:
    """Softmax probabilities summed over sliding windows, ``[C,H,W]`` for ``image`` ``[3,H,W]``.

    Windows (:func:`window_spans` by ``tiling``) of one size are batched together. ``on_windows(n)``
    is told of each batch of ``n`` windows done.
    """
    _, h, w = image.shape
    by_size: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for y0, y1 in window_spans(h, window, stride, tiling):
        for x0, x1 in window_spans(w, window, stride, tiling):
            by_size.setdefault((y1 - y0, x1 - x0), []).append((y0, x0))
    total = image.new_zeros(num_classes, h, w)
    for (wh, ww), corners in by_size.items():
        for i in range(0, len(corners), batch):
            chunk = corners[i: i + batch]
            crops = torch.stack([image[:, y: y + wh, x: x + ww] for y, x in chunk])
            probs = model(crops).softmax(1)
            for (y, x), p in zip(chunk, probs):
                total[:, y: y + wh, x: x + ww] += p
            if on_windows is not None:
                on_windows(len(chunk))
    return total


@torch.no_grad()
def mode_scores(model: nn.Module, images: Tensor, cfg: EvalConfig, crop: int, num_classes: int,
                on_windows: Callable[[int], None] | None = None) -> Tensor:
    """Scores ``[B,C,H,W]`` for ``images`` ``[B,3,H,W]`` by ``eval.mode``: ``whole``, the logits
    of one forward; ``sliding``, the softmax summed over each image's windows (``on_windows``:
    see :func:`sliding_probs`)."""
    if cfg.mode == "whole":
        return model(images)
    window = cfg.window or crop
    stride = cfg.stride or max(1, window * 2 // 3)
    batch = cfg.window_batch or (8 if images.is_cuda else 1)  # batching measured slower on a CPU
    return torch.stack([sliding_probs(model, image, window, stride, num_classes, batch, cfg.tiling,
                                      on_windows) for image in images])


def mode_probabilities(scores: Tensor, mode: str) -> Tensor:
    """Class probabilities from :func:`mode_scores`' scores: the softmax of the logits (``whole``),
    the windows' summed softmax divided by its sum, the windows covering each pixel (``sliding``)."""
    return scores.softmax(1) if mode == "whole" else scores / scores.sum(1, keepdim=True)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(h, w)`` resized by ``scale``, rounded half up as MMSegmentation's ``Resize`` (at least 1)."""
    return tuple(max(1, int(side * scale + 0.5)) for side in size)


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``x`` ``[B,C,h,w]`` resized to ``size`` (bilinear, ``align_corners=False``); itself at its size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def tta_probs(model: nn.Module, images: Tensor, cfg: EvalConfig, crop: int, num_classes: int,
              on_windows: Callable[[int], None] | None = None) -> Tensor:
    """Test-time augmentation (``eval.tta``): class probabilities ``[B,C,H,W]`` for ``images``
    ``[B,3,H,W]``, the mean over every scale (and, with ``flip``, the flipped image, whose
    probabilities are flipped back) of ``eval.mode``'s probabilities, resized to the image's size."""
    tta, size, b = cfg.tta, tuple(images.shape[-2:]), images.shape[0]

    def at_scale(scale: float) -> Tensor:
        x = resize(images, scaled_size(size, scale))
        probs = mode_probabilities(mode_scores(model, torch.cat([x, x.flip(-1)]) if tta.flip else x,
                                               cfg, crop, num_classes, on_windows), cfg.mode)
        return resize(probs[:b] + probs[b:].flip(-1) if tta.flip else probs, size)

    return sum(at_scale(scale) for scale in tta.scales) / (len(tta.scales) * (2 if tta.flip else 1))


@torch.no_grad()
def predict_scores(model: nn.Module, images: Tensor, cfg: EvalConfig, crop: int, num_classes: int,
                   on_windows: Callable[[int], None] | None = None) -> Tensor:
    """Scores ``[B,C,H,W]`` for ``images`` ``[B,3,H,W]`` whose argmax over dim 1 is the
    prediction: :func:`tta_probs` with ``eval.tta``, else :func:`mode_scores` (``on_windows``:
    see :func:`sliding_probs`)."""
    score = tta_probs if cfg.tta.active else mode_scores
    return score(model, images, cfg, crop, num_classes, on_windows)


def probabilities(scores: Tensor, cfg: EvalConfig) -> Tensor:
    """Class probabilities ``[B,C,H,W]`` from :func:`predict_scores`' scores."""
    return scores if cfg.tta.active else mode_probabilities(scores, cfg.mode)


@torch.no_grad()
def predict(model: nn.Module, image: Tensor, cfg: EvalConfig, crop: int, num_classes: int,
            on_windows: Callable[[int], None] | None = None) -> Tensor:
    """Class indices ``[H,W]`` for one image ``[3,H,W]`` by the recipe's evaluation mode and
    test-time augmentation (:func:`predict_scores`)."""
    return predict_scores(model, image[None], cfg, crop, num_classes, on_windows)[0].argmax(0)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, cfg: EvalConfig, *, crop: int, num_classes: int,
             ignore_index: int, device: torch.device, class_names: tuple[str, ...] = (),
             desc: str = "eval", progress_every_s: float = 10.0) -> dict[str, Any]:
    """mIoU of ``model`` over ``dataset`` (each image counted once across DDP ranks). Rank 0
    shows the progress of a wait longer than ``progress_every_s`` as ``desc``: its images, the
    windows in sliding mode, and the ETA (:class:`~ssseg.progress.Progress`, on stderr)."""
    broadcast_buffers_(model)
    rank, world = rank_and_world()
    count = len(dataset) if cfg.max_images is None else min(cfg.max_images, len(dataset))
    cm = ConfusionMatrix(num_classes, ignore_index)
    mine = range(rank, count, world)
    with eval_mode(model), Progress(len(mine), desc, "images", every_s=progress_every_s,
                                    style="off" if rank else None) as progress:
        def count_windows(n: int) -> None:
            progress.note(windows=progress.fields.get("windows", 0) + n)
            progress.update(0)

        for index in mine:
            sample = dataset[index]
            pred = predict(model, sample["image"].to(device), cfg, crop, num_classes, count_windows)
            cm.update(pred, sample["mask"].to(device))
            progress.update()
    if world > 1:
        cm.matrix = all_reduce_sum_(cm.matrix.to(device)).cpu()
    iou = cm.iou()
    names = class_names or tuple(str(i) for i in range(num_classes))
    return {
        "miou": cm.miou(),
        "pixel_acc": cm.pixel_accuracy(),
        "iou": {n: v for n, v in zip(names, iou)},
        "absent_classes": [n for n, v in zip(names, iou) if v is None],
        "images": count,
    }
