"""The data contract every dataset in ssseg follows.

Images are float32 tensors in [0, 1] with shape ``[3, H, W]`` (the model normalises them, so
photometric augmentation and CutMix work on the same scale for every dataset). Masks are int64
``[H, W]`` class indices with ``ignore_index`` (255) for pixels without a label.

Samples, as yielded by the three datasets of a :class:`DataBundle`:

- labeled:   ``{"image": [3,h,w], "mask": [h,w]}`` after the weak pipeline (fixed crop size);
- unlabeled: ``{"image": [3,h,w], "valid": [h,w] bool}``; padding added by the weak pipeline is
  not valid and never enters an unsupervised loss;
- val:       ``{"image": [3,H,W], "mask": [H,W], "name": str}`` at the original size.

A bundle holds only the datasets a command needs (:data:`NEEDS`): training builds all three,
evaluation only ``val``, prediction none (class names and palette only); the others are None.
"""

from __future__ import annotations

import attrs
from torch.utils.data import Dataset


IGNORE_INDEX = 255
NEEDS = ("train", "val", "classes")  # what a command builds: everything, the val set, metadata


@attrs.frozen
class DataBundle:
    """The datasets and class metadata a recipe's ``data`` section resolves to."""

    labeled: Dataset | None
    unlabeled: Dataset | None
    val: Dataset | None
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX
