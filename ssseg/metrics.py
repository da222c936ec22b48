"""Dataset-level segmentation metrics from a confusion matrix."""

from __future__ import annotations

import torch
from torch import Tensor


class ConfusionMatrix:
    """Accumulates a ``[C, C]`` confusion matrix (rows: ground truth, columns: prediction)
    over a whole dataset; pixels whose ground truth is ``ignore_index`` are skipped."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add predictions and targets of any matching shape (class indices)."""
        keep = target != self.ignore_index
        t, p = target[keep].long().cpu(), pred[keep].long().cpu()
        if t.numel() and (t.max() >= self.num_classes or t.min() < 0):
            raise ValueError(f"target holds class {int(t.max())} but there are {self.num_classes} "
                             f"classes (and ignore index {self.ignore_index})")
        self.matrix += torch.bincount(t * self.num_classes + p,
                                      minlength=self.num_classes ** 2).view_as(self.matrix)

    def iou(self) -> list[float | None]:
        """Per-class IoU = ΣI / ΣU; None for a class with zero union (absent from both)."""
        inter = self.matrix.diag().double()
        union = self.matrix.sum(0).double() + self.matrix.sum(1).double() - inter
        return [None if u == 0 else float(i / u) for i, u in zip(inter, union)]

    def miou(self) -> float:
        """Mean IoU over the classes that have a union (absent classes are excluded)."""
        present = [v for v in self.iou() if v is not None]
        return sum(present) / len(present) if present else float("nan")

    def pixel_accuracy(self) -> float:
        """Fraction of labeled pixels predicted correctly."""
        total = int(self.matrix.sum())
        return float(self.matrix.diag().sum()) / total if total else float("nan")
