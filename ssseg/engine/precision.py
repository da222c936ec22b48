"""Numerics and speed options of a run: mixed precision (``run.precision``), the memory layout
(``run.channels_last``, applied in :meth:`ssseg.models.SegModel.use_channels_last`) and
``torch.compile`` (``run.compile``). Their effect on step time and their agreement with fp32 are
measured by ``benchmarks/precision.py``."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ssseg.errors import UserError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` at ``precision`` on ``device``'s type; a no-op context for fp32."""
    dtype = DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler, enabled for fp16 only (bf16 has fp32's exponent range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def compile_backends() -> list[str]:
    """The ``torch.compile`` backends this torch offers (debug backends included)."""
    return sorted(torch._dynamo.list_backends(exclude_tags=()))


def compiled(module: nn.Module, backend: str | None) -> nn.Module:
    """``torch.compile(module, backend=backend)``, or ``module`` itself when ``backend`` is None.

    The compiled wrapper only runs the forward; parameters, state dicts and checkpoints stay those
    of ``module``. Compilation happens at the first call (minutes for ``inductor`` on a CPU).
    """
    if backend is None:
        return module
    valid = compile_backends()
    if backend not in valid:
        raise UserError(f"run.compile: unknown torch.compile backend {backend!r}; valid: "
                        f"{', '.join(valid)} (inductor is the default choice), or null for none")
    return torch.compile(module, backend=backend)
