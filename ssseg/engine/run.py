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
from ssseg.engine.state import TrainingState
from ssseg.engine.types import FeatureRequest
from ssseg.errors import UserError
from ssseg.models import SegModel, build_model
from ssseg.plugin_manager import check_recipe
from ssseg.recipe.schema import Recipe


@attrs.define
class Run:
    """A built run. Plugins receive it in the build hooks and the eval hooks.

    ``recipe`` (validated), ``out_dir`` (None when nothing is written), ``device``, ``data``
    (:class:`~ssseg.data.base.DataBundle`: ``labeled``, ``unlabeled``, ``val``, ``num_classes``,
    ``ignore_index``, ``class_names``), ``student`` (the :class:`~ssseg.models.SegModel`),
    ``modules`` (trainable modules contributed by ``build_modules``, by name), ``plugins`` (by
    recipe key), ``optimizer`` (None until ``build_modules`` has answered), ``teacher`` (None
    until ``build_teacher``; None afterwards means the student makes the pseudo-labels),
    ``pseudo_label_source`` and ``features`` (the union of ``request_features``), ``rank``,
    ``world_size``, ``state`` (the :class:`~ssseg.engine.state.TrainingState`, which the trainer
    alone advances) and ``iteration`` (the number of steps taken, read-only).
    """

    recipe: Recipe
    out_dir: Path | None
    device: torch.device
    data: DataBundle
    student: SegModel
    plugins: dict[str, Any]
    pm: pluggy.PluginManager
    state: TrainingState
    modules: dict[str, nn.Module] = attrs.field(factory=dict)
    optimizer: torch.optim.Optimizer | None = None
    teacher: nn.Module | None = None
    pseudo_label_source: str = "teacher"
    features: FeatureRequest = attrs.field(factory=FeatureRequest)
    rank: int = 0
    world_size: int = 1

    @property
    def iteration(self) -> int:
        """The number of training steps taken."""
        return self.state.iteration

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    def new_model(self, seed: int) -> SegModel:
        """Another instance of the recipe's model (the same architecture and encoder weights file)
        whose random initialisation is drawn from ``seed``; the global RNG stream is untouched.
        Return it from ``build_modules`` to train it: the core places it like the student."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(self.recipe.model, self.data.num_classes)


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


def param_groups(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, head) parameters of a module: its own ``param_groups()`` if it has one (a
    :class:`SegModel`: encoder, decoder and heads), else everything is head."""
    if hasattr(module, "param_groups"):
        return module.param_groups()
    return [], list(module.parameters())


def build_optimizer(recipe: Recipe, trainable: list[nn.Module]) -> torch.optim.Optimizer:
    """SGD or AdamW over the ``trainable`` modules (the student first): backbone parameters at
    ``lr``, head parameters at ``lr * head_lr_mult``; one schedule for all groups."""
    o = recipe.optim
    groups = []
    for module in trainable:
        backbone, head = param_groups(module)
        groups += [{"params": backbone, "lr": o.lr}, {"params": head, "lr": o.lr * o.head_lr_mult}]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["initial_lr"] = g["lr"]
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)


def place(module: nn.Module, recipe: Recipe, device: torch.device, world: int) -> nn.Module:
    """A trainable module as the recipe runs it: SyncBatchNorm (``run.sync_bn``, several
    processes), on ``device``, channels_last (``run.channels_last``)."""
    if recipe.run.sync_bn and world > 1:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    module = module.to(device)
    if recipe.run.channels_last:
        module = module.use_channels_last() if isinstance(module, SegModel) else \
            module.to(memory_format=torch.channels_last)
    return module


def build_run(recipe: Recipe, out_dir: Path | None = None, needs: str = "train") -> Run:
    """Build data, student, contributed modules, optimiser and plugins, calling the build hooks
    in order: ``build_modules``, ``setup``, ``build_teacher``, ``pseudo_label_source``,
    ``request_features``. ``needs``: the datasets to build (``train``, ``val`` to evaluate,
    ``classes`` to predict)."""
    rank, world = rank_and_world()
    if recipe.run.threads:
        torch.set_num_threads(recipe.run.threads)
    device = pick_device(recipe.run.device)
    checked = check_recipe(recipe)
    pm = checked.pm
    torch.manual_seed(recipe.seed)
    data = build_data(recipe.data, needs)
    student = place(build_model(recipe.model, data.num_classes), recipe, device, world)
    state = TrainingState.start(recipe.seed, rank, device, recipe.run.precision)
    run = Run(recipe=recipe, out_dir=out_dir, device=device, data=data, student=student,
              plugins=checked.plugins, pm=pm, state=state, rank=rank, world_size=world)
    for answer in pm.hook.build_modules(run=run):
        for name, module in answer.items():
            if name in run.modules:
                raise UserError(f"two plugins answer build_modules with the same name {name!r}")
            run.modules[name] = place(module, recipe, device, world)
    run.optimizer = build_optimizer(recipe, [student, *run.modules.values()])
    pm.hook.setup(run=run)
    run.teacher = pm.hook.build_teacher(run=run, student=student)
    run.pseudo_label_source = pm.hook.pseudo_label_source(run=run) or "teacher"
    requests = [r for r in pm.hook.request_features(run=run) if r is not None]
    run.features = FeatureRequest(student=tuple(sorted({f for r in requests for f in r.student})),
                                  teacher=tuple(sorted({f for r in requests for f in r.teacher})),
                                  student_on_weak=any(r.student_on_weak for r in requests),
                                  second_view=any(r.second_view for r in requests))
    if run.features.teacher and not isinstance(run.teacher or student, SegModel):
        raise UserError(f"a plugin requests teacher features {list(run.features.teacher)}, but the "
                        f"teacher is a {type(run.teacher).__name__}, not an ssseg SegModel")
    return run
