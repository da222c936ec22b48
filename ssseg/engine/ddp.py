"""Wrapping trainable modules for DistributedDataParallel, searching for unused parameters only
where some exist: DDP's ``find_unused_parameters`` walks the autograd graph after every forward,
a per-step cost on a GPU that a model using all its parameters should not pay."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ssseg.models import SegModel, eval_mode


def unused_parameters(model: SegModel) -> list[str]:
    """The parameters of ``model`` that a training forward (auxiliary head included) leaves
    without a gradient, from one eval-mode forward and ``autograd.grad`` on a small input: no
    gradient, statistic or random state of the model changes."""
    side = 2 * max(model.stride, 32)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with eval_mode(model):
        out = model(torch.zeros(1, 3, side, side, device=model.mean.device), aux_rows=1)
    outputs = out.values() if isinstance(out, dict) else [out]
    grads = torch.autograd.grad(sum(o.float().sum() for o in outputs), [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]


def needs_unused_search(module: nn.Module) -> bool:
    """Whether DDP must search ``module``'s graph for unused parameters: as the module declares
    (``ddp_find_unused_parameters``), else detected for an ssseg model, else not."""
    declared = getattr(module, "ddp_find_unused_parameters", None)
    if declared is not None:
        return bool(declared)
    return isinstance(module, SegModel) and bool(unused_parameters(module))


def wrap(module: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """``module`` as a training forward calls it: wrapped for DDP with several processes."""
    if world_size == 1:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids,
                                   find_unused_parameters=needs_unused_search(module))
