"""Cutout as the released ST++ applies it to pseudo-labelled images (dataset/transform.py): with
probability ``p`` one box of area U(0.02, 0.4)·H·W and aspect U(0.3, 1/0.3), its top-left corner
uniform and redrawn until the box fits, filled with per-pixel uniform random 8-bit values, and
its label set to the ignore index."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssseg.augment.draws import uniform


def cutout_box(height: int, width: int, generator: torch.Generator,
               area: tuple[float, float] = (0.02, 0.4), ratio: tuple[float, float] = (0.3, 1 / 0.3)
               ) -> tuple[int, int, int, int]:
    """(top, left, box height, box width) of one Cutout box, drawn until it fits the image:
    ``w = ⌊√(a/r)⌋``, ``h = ⌊√(a·r)⌋`` for area a and aspect r, as released."""
    while True:
        size = float(uniform(*area, (), generator)) * height * width
        aspect = float(uniform(*ratio, (), generator))
        box_w, box_h = int(math.sqrt(size / aspect)), int(math.sqrt(size * aspect))
        left = int(torch.randint(0, width, (), generator=generator))
        top = int(torch.randint(0, height, (), generator=generator))
        if left + box_w <= width and top + box_h <= height:
            return top, left, box_h, box_w


def cutout(image: Tensor, mask: Tensor, generator: torch.Generator, p: float = 0.5,
           ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Cutout of one image ``[3,H,W]`` in [0, 1] and its label map ``[H,W]`` (see the module
    doc); new tensors, the inputs are not changed."""
    if float(torch.rand((), generator=generator)) >= p:
        return image, mask
    top, left, box_h, box_w = cutout_box(image.shape[-2], image.shape[-1], generator)
    noise = uniform(0.0, 255.0, (image.shape[0], box_h, box_w), generator).floor_().div_(255.0)
    image, mask = image.clone(), mask.clone()
    image[:, top:top + box_h, left:left + box_w] = noise.to(image.dtype)
    mask[top:top + box_h, left:left + box_w] = ignore_index
    return image, mask
