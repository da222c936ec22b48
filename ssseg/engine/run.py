"""Building a run from a recipe: the build context the build hooks see, the :class:`Run` made once
from their answers, and the plugins the core holds beside it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import attrs
import torch
from torch import nn

from ssseg.data.base import DataBundle
from ssseg.data.registry import build_data
from ssseg.engine.distributed import rank_and_world
from ssseg.engine.state import TrainingState
from ssseg.engine.types import FeatureRequest
from ssseg.errors import UserError
from ssseg.models import SegModel, build_model
from ssseg.plugin_manager import PluginSet, check_recipe
from ssseg.recipe.schema import Recipe


@attrs.frozen(kw_only=True)
class RunBasics:
    """What every phase of a run knows once the data and the student exist: ``recipe``
    (validated), ``out_dir`` (None when nothing is written), ``device``, ``data``
    (:class:`~ssseg.data.base.DataBundle`: ``labeled``, ``unlabeled``, ``val``, ``num_classes``,
    ``ignore_index``, ``class_names``), ``student`` (the :class:`~ssseg.models.SegModel`),
    ``pseudo_label_source`` (the recipe's decision), ``rank`` and ``world_size``."""

    recipe: Recipe
    out_dir: Path | None
    device: torch.device
    data: DataBundle
    student: SegModel
    pseudo_label_source: str
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0


@attrs.frozen(kw_only=True)
class BuildContext(RunBasics):
    """What the build hooks see, read-only: the :class:`RunBasics` (recipe, out_dir, device, data,
    student, pseudo_label_source, rank, world_size) and ``new_model(seed)``."""

    def new_model(self, seed: int) -> SegModel:
        """Another instance of the recipe's model (the same architecture and encoder weights file)
        whose random initialisation is drawn from ``seed``; the global RNG stream is untouched.
        Return it from ``build_modules`` to train it: the core places it like the student."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(self.recipe.model, self.data.num_classes)


@attrs.frozen(kw_only=True)
class Run(RunBasics):
    """A built run, made once from the build hooks' combined answers; plugins receive it in
    ``setup`` and the evaluation hooks. Besides the :class:`RunBasics` (recipe, out_dir, device,
    data, student, pseudo_label_source, rank, world_size): ``modules`` (the trainable modules
    contributed by ``build_modules``, by name, read-only), ``optimizer``, ``teacher`` (the module
    that makes pseudo-labels: a plugin's teacher, or the student itself when none builds one),
    ``features`` (the union of ``request_features``) and ``state`` (the
    :class:`~ssseg.engine.state.TrainingState`, written only through its own methods);
    ``iteration`` is the number of steps taken."""

    teacher: nn.Module
    modules: Mapping[str, nn.Module]
    optimizer: torch.optim.Optimizer | None
    features: FeatureRequest
    state: TrainingState

    @property
    def iteration(self) -> int:
        """The number of training steps taken."""
        return self.state.iteration

    @property
    def separate_teacher(self) -> bool:
        """Whether a plugin built a teacher (``run.teacher`` is not the student)."""
        return self.teacher is not self.student


@attrs.frozen
class BuiltRun:
    """A built :class:`Run` and its registered plugins (:class:`~ssseg.plugin_manager.PluginSet`),
    which the core holds beside the run so that plugins never see each other."""

    run: Run
    plugins: PluginSet


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


def build_run(recipe: Recipe, out_dir: Path | None = None, needs: str = "train",
              data: DataBundle | None = None) -> BuiltRun:
    """Check the recipe, then build data, student and the build phase's answers in the table's
    order (contributed modules, the optimiser, the teacher, the feature requests) into a
    :class:`Run`, and call ``setup``. ``needs``: the datasets to build (``train``, ``val`` to
    evaluate, ``classes`` to predict); ``data``: the datasets already built (a stage's training
    set, :mod:`ssseg.stages`)."""
    rank, world = rank_and_world()
    if recipe.run.threads:
        torch.set_num_threads(recipe.run.threads)
    device = pick_device(recipe.run.device)
    plugins = check_recipe(recipe)
    source = plugins.pseudo_label_source
    torch.manual_seed(recipe.seed)
    data = build_data(recipe.data, needs) if data is None else data
    student = place(build_model(recipe.model, data.num_classes), recipe, device, world)
    build = BuildContext(recipe=recipe, out_dir=out_dir, device=device, data=data, student=student,
                         pseudo_label_source=source, rank=rank, world_size=world)
    modules = {name: place(module, recipe, device, world)
               for name, module in plugins.call("build_modules", build=build).items()}
    optimizer = build_optimizer(recipe, [student, *modules.values()])
    teacher = plugins.call("build_teacher", default=student, build=build, student=student)
    features = plugins.call("request_features", build=build)
    if features.teacher and not isinstance(teacher, SegModel):
        raise UserError(f"a plugin requests teacher features {list(features.teacher)}, but the "
                        f"teacher is a {type(teacher).__name__}, not an ssseg SegModel")
    run = Run(recipe=recipe, out_dir=out_dir, device=device, data=data, student=student, teacher=teacher,
              modules=MappingProxyType(modules), optimizer=optimizer, pseudo_label_source=source,
              features=features, state=TrainingState.start(recipe.seed, rank, device, recipe.run.precision),
              rank=rank, world_size=world)
    plugins.call("setup", run=run)
    return BuiltRun(run, plugins)
