"""Random draws shared by the augmentation code: every draw comes from an explicit generator and is
made on its device (the CPU for None, torch's global generator)."""

from __future__ import annotations

import torch
from torch import Tensor


def uniform(low: float, high: float, size: int | tuple[int, ...], generator: torch.Generator | None,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """``size`` draws from U[low, high), computed in ``dtype``."""
    device = generator.device if generator is not None else None
    return low + (high - low) * torch.rand(size, generator=generator, device=device, dtype=dtype)
