"""Everything a training run is built from a recipe: data, student, teacher, plugins, optimiser."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import pluggy
import torch
from torch import nn

from ssseg.data.base import DataBundle, build_data
from ssseg.engine.distributed import rank_and_world
from ssseg.errors import UserError
from ssseg.models import SegModel, build_model
from ssseg.plugin_manager import instantiate, register_plugins
from ssseg.recipe.schema import Recipe


@attrs.define
class Run:
    """A built run. Plugins receive it in ``setup``, ``build_teacher`` and the eval hooks."""

    recipe: Recipe
    out_dir: Path | None
    device: torch.device
    data: DataBundle
    student: SegModel
    plugins: dict[str, Any]
    pm: pluggy.PluginManager
    optimizer: torch.optim.Optimizer
    teacher: nn.Module | None = None
    rank: int = 0
    world_size: int = 1
    iteration: int = 0

    @property
    def hook(self):
        """The plugin manager's hook relay (``run.hook.<name>(...)``)."""
        return self.pm.hook

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0


def pick_device(name: str) -> torch.device:
    """``auto`` = this process's CUDA device if there is one, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"run.device: {err}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"run.device: {name!r}, but torch sees {torch.cuda.device_count()} CUDA "
                        "device(s) here; use auto or cpu")
    return device


def build_optimizer(recipe: Recipe, student: SegModel) -> torch.optim.Optimizer:
    """SGD or AdamW with two groups: encoder at ``lr``, decoder/head at ``lr * head_lr_mult``."""
    o = recipe.optim
    backbone, head = student.param_groups()
    groups = [{"params": backbone, "lr": o.lr}, {"params": head, "lr": o.lr * o.head_lr_mult}]
    for g in groups:
        g["initial_lr"] = g["lr"]
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)


def build_plugins(recipe: Recipe) -> dict[str, Any]:
    """Instantiate the recipe's plugins in recipe order, each tagged with its recipe key."""
    plugins = {}
    for key, params in recipe.plugins.items():
        plugin = instantiate(key, params)
        plugin.ssseg_key = key
        plugins[key] = plugin
    return plugins


def build_run(recipe: Recipe, out_dir: Path | None = None, needs: str = "train") -> Run:
    """Build data, model, optimiser and plugins, then call ``setup`` and ``build_teacher``.
    ``needs``: the datasets to build (``train``, ``val`` to evaluate, ``classes`` to predict)."""
    rank, world = rank_and_world()
    if recipe.run.threads:
        torch.set_num_threads(recipe.run.threads)
    device = pick_device(recipe.run.device)
    plugins = build_plugins(recipe)
    pm = register_plugins(plugins.values())
    torch.manual_seed(recipe.seed)
    data = build_data(recipe.data, needs)
    student = build_model(recipe.model, data.num_classes)
    if recipe.run.sync_bn and world > 1:
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
    student = student.to(device)
    if recipe.run.channels_last:
        student = student.use_channels_last()
    run = Run(recipe=recipe, out_dir=out_dir, device=device, data=data, student=student,
              plugins=plugins, pm=pm, optimizer=build_optimizer(recipe, student),
              rank=rank, world_size=world)
    pm.hook.setup(run=run)
    run.teacher = pm.hook.build_teacher(run=run, student=student)
    return run
