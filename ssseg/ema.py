"""The exponential moving average shared by EMA teachers and EMA heads: the decay ramp and the
in-place update, in ``ssseg.api``."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def ema_decay(iteration: int, alpha: float) -> float:
    """d_t = min(1 − 1/(t + 1), α): the ramp of Tarvainen & Valpola's mean teacher, t the global
    iteration (0-based), so the first updates copy more of the student."""
    return min(1.0 - 1.0 / (iteration + 1), alpha)


@torch.no_grad()
def ema_update_(targets: Sequence[Tensor], sources: Sequence[Tensor], decay: float) -> None:
    """θ' ← d·θ' + (1 − d)·θ for each (target, source) pair of floating tensors, in place, in one
    batched call."""
    if targets:
        torch._foreach_lerp_(list(targets), list(sources), 1.0 - decay)
