"""uint8 levels for the photometric lookup-table ops on a CPU: conversion, histograms, tables.

A CPU moves a uint8 level in a quarter of the bytes of a float32 value, and PIL applies its point
ops as 256-entry tables. Tables are applied and histograms counted one image plane at a time,
which ``benchmarks/photometric_throughput.py --lut-kernels`` measured 10x and more faster on a CPU
than one batched gather or ``bincount`` (both need int64 indices, 8 bytes per value).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def quantize(images: Tensor) -> Tensor:
    """Nearest uint8 level (0..255) of float values in [0, 1], on the CPU (numpy's cast to uint8
    measured twice as fast as torch's)."""
    return torch.from_numpy(images.mul(255.0).add_(0.5).numpy().astype(np.uint8))


def ramp(rows: int) -> Tensor:
    """Every level once, as a float image ``[rows, 1, 1, 256]`` in [0, 1]: a point op applied to it
    gives the op's table."""
    return (torch.arange(256, dtype=torch.float32) / 255.0).expand(rows, 1, 1, 256)


def _planes(levels: Tensor, channels: int) -> np.ndarray:
    """``levels [N, C, H, W]`` as a numpy view ``[N, channels, -1]`` (``channels`` is C or 1)."""
    return levels.contiguous().numpy().reshape(levels.shape[0], channels, -1)


def histograms(levels: Tensor) -> Tensor:
    """Per-channel histograms ``[N, C, 256]`` (int64) of uint8 ``levels [N, C, H, W]``."""
    counts = [torch.bincount(plane, minlength=256) for plane in levels.flatten(2).flatten(0, 1)]
    return torch.stack(counts).view(*levels.shape[:2], 256)


def apply_tables(levels: Tensor, tables: Tensor) -> Tensor:
    """Look every level of ``levels [N, C, H, W]`` (uint8) up in its sample's table: ``tables`` is
    uint8 ``[N, C, 256]`` (one per channel) or ``[N, 1, 256]`` (one for all channels)."""
    out = torch.empty(levels.shape, dtype=torch.uint8)
    channels = tables.shape[1]
    src, dst, table = _planes(levels, channels), _planes(out, channels), tables.contiguous().numpy()
    for index in np.ndindex(table.shape[:2]):
        np.take(table[index], src[index], out=dst[index])
    return out
