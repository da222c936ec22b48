"""Validation: whole-image or sliding-window inference and dataset-level mIoU."""

from __future__ import annotations

from typing import Any, Callable

import torch
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
def predict(model: nn.Module, image: Tensor, cfg: EvalConfig, crop: int, num_classes: int,
            on_windows: Callable[[int], None] | None = None) -> Tensor:
    """Class indices ``[H,W]`` for one image ``[3,H,W]`` by the recipe's evaluation mode
    (``on_windows``: see :func:`sliding_probs`)."""
    if cfg.mode == "whole":
        return model(image[None])[0].argmax(0)
    window = cfg.window or crop
    stride = cfg.stride or max(1, window * 2 // 3)
    batch = cfg.window_batch or (8 if image.is_cuda else 1)  # batching measured slower on a CPU
    return sliding_probs(model, image, window, stride, num_classes, batch, cfg.tiling, on_windows).argmax(0)


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
