"""Training a staged recipe: each stage of ``recipe.stages`` in order, a whole run of the recipe
with the stage's patch in ``<out>/stages/<name>/`` (its own recipe.yaml, metrics.jsonl, last.pt,
best.pt and snapshots), from a fresh model; then the stage's dataset pass (``after_stage``); then
its ``done.json``. Running the same command again skips every stage with ``done.json``, continues
an unfinished stage from its ``last.pt`` and repeats only the unfinished part of its pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ssseg.data.registry import build_data
from ssseg.engine.checkpoint import Checkpointer
from ssseg.engine.distributed import rank_and_world
from ssseg.engine.feed import DataFeed
from ssseg.engine.run import build_run
from ssseg.engine.run_folder import RunFolder
from ssseg.errors import UserError
from ssseg.files import write_text
from ssseg.plugin_manager import check_recipe
from ssseg.recipe.load import build_recipe, merge
from ssseg.recipe.schema import Recipe, StageConfig
from ssseg.recipe.structure import unstructure
from ssseg.run_files import DONE, STAGES
from ssseg.stages.dataset_pass import DatasetPass
from ssseg.stages.label_store import remove_leftovers
from ssseg.stages.training_set import LABELS, compose
from ssseg.stages.types import Stage


def stage_recipe(recipe: Recipe, stage: StageConfig, index: int) -> Recipe:
    """The recipe stage ``stage`` trains: ``recipe`` with the stage's patch, without stages;
    errors name the stage's key path."""
    data = merge({**unstructure(recipe), "stages": []}, stage.patch)
    return build_recipe(data, f"{recipe.source or '<recipe>'}: stages[{index}] ({stage.name})")


def stages_of(recipe: Recipe, out: Path) -> list[Stage]:
    """Every stage of ``recipe`` trained into ``out``, with its recipe, each checked (plugins
    included) before the first stage trains."""
    names = tuple(s.name for s in recipe.stages)
    stages = [Stage(name=s.name, index=i, names=names, reads=s.reads, recipe=stage_recipe(recipe, s, i),
                    folder=out / STAGES / s.name) for i, s in enumerate(recipe.stages)]
    for stage in stages:
        check_recipe(stage.recipe)
    return stages


def train_stages(recipe: Recipe, folder: RunFolder,
                 train_built: Callable[..., int]) -> int:
    """Train every unfinished stage of ``recipe`` into ``folder`` with ``train_built(built,
    stage folder, checkpointer, resume, how_to_continue)`` (the CLI's); the first non-zero exit
    code stops, else 0."""
    if rank_and_world()[1] > 1:
        raise UserError("a recipe with stages trains in one process (its dataset passes are not "
                        "distributed); run it without torchrun")
    for stage in stages_of(recipe, folder.path):
        sub = RunFolder(stage.folder)
        if (stage.folder / DONE).is_file():
            print(f"stage {stage.name}: finished before ({stage.folder / DONE}), skipped", flush=True)
            continue
        print(f"stage {stage.name} ({stage.index + 1} of {len(stage.names)})", flush=True)
        code = train_stage(stage, sub, train_built, lambda: (
            f"run the same command again to continue (finished stages are skipped; stage "
            f"{stage.name!r} continues from {sub.last})" if sub.last.exists() else
            "run the same command again to continue"))
        if code:
            return code
    print(f"results in {folder.path / STAGES / recipe.stages[-1].name}")
    return 0


def train_stage(stage: Stage, sub: RunFolder, train_built: Callable[..., int],
                how_to_continue: Callable[[], str]) -> int:
    """Build, train and pass one stage, then mark it done; the training's exit code."""
    plugins = check_recipe(stage.recipe)
    training_set = plugins.call("stage_training_set", stage=stage)
    data = compose(build_data(stage.recipe.data, "train"), training_set, stage.folder.parent, stage.reads)
    sub.path.mkdir(parents=True, exist_ok=True)
    built = build_run(stage.recipe, sub.path, data=data)
    iters_per_epoch = DataFeed(built.run).iters_per_epoch
    snapshots = built.plugins.call("stage_snapshots", stage=stage, iters_per_epoch=iters_per_epoch)
    checkpointer = Checkpointer(sub.path, stage.recipe.run.keep_checkpoints, snapshots)
    code = train_built(built, sub, checkpointer, sub.last.exists(), how_to_continue)
    if code:
        return code
    for labels in (stage.folder / LABELS).glob("*"):
        remove_leftovers(labels)
    if data.unlabeled is not None:
        built.plugins.call("after_stage", stage=stage, dataset_pass=DatasetPass(
            stage=stage, unlabeled=data.unlabeled, num_classes=data.num_classes, device=built.run.device))
    write_text(stage.folder / DONE, json.dumps(built.run.state.last_eval, sort_keys=True) + "\n")
    return 0
