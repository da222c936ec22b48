"""The core's loss functions, which plugins share through ``ssseg.api``: cross-entropy with the
core's ignore rule, and the weighted cross-entropy of one unlabeled view."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssseg.engine.types import Pseudo


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """Mean cross-entropy over non-ignored pixels (0 when every pixel is ignored)."""
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return loss / (target != ignore_index).sum().clamp_min(1)


def weighted_view_loss(logits: Tensor, pseudo: Pseudo, weight: Tensor | None, normalize: str = "valid") -> Tensor:
    """The loss of one view: Σ weight·valid·CE(logits, labels) / Σ valid, or with
    ``normalize="pixels"`` Σ weight·CE / (B·H·W) over every pixel, padding included (weight
    None: 1, a view of ground truth); pixels of ignored ground truth (``pseudo.ignored``) never
    count in the sum."""
    ce = F.cross_entropy(logits, pseudo.labels, reduction="none")
    if weight is None:
        weight = torch.ones_like(ce)
    if pseudo.ignored is not None:  # ground truth marked ignore: never trained
        weight = weight * ~pseudo.ignored
    if normalize == "pixels":
        return (ce * weight).sum() / ce.numel()
    valid = pseudo.valid.to(ce.dtype)
    return (ce * weight * valid).sum() / valid.sum().clamp_min(1)
