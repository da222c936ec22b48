"""A staged test plugin: records the stage hooks it is called with, keeps a snapshot, and labels
every unlabeled image with the stage's best model into the set ``pseudo``."""

from __future__ import annotations

import attrs

from ssseg.api import DatasetPass, Plugin, Stage, TrainingSet, hookimpl

CALLS: list[str] = []


class Labeller(Plugin):
    """Stage k > 0 trains on every earlier stage's set ``pseudo``; each stage but the last labels."""

    name = "labeller"

    @attrs.frozen
    class Config:
        """``snapshot``: an iteration to keep; ``copies``: the labeled list's repetitions."""

        snapshot: int = 1
        copies: int | None = None

    @hookimpl
    def stage_training_set(self, stage: Stage) -> TrainingSet | None:
        CALLS.append(f"stage_training_set:{stage.name}")
        sets = tuple(f"{n}/pseudo" for n in stage.names[:stage.index])
        return TrainingSet(label_sets=sets, labeled_copies=self.config.copies) if sets else None

    @hookimpl
    def stage_snapshots(self, stage: Stage, iters_per_epoch: int) -> tuple[int, ...]:
        CALLS.append(f"stage_snapshots:{stage.name}")
        return (self.config.snapshot,)

    @hookimpl
    def after_iteration(self, ctx, logs) -> None:
        CALLS.append("step")

    @hookimpl
    def after_stage(self, stage: Stage, dataset_pass: DatasetPass) -> None:
        CALLS.append(f"after_stage:{stage.name}")
        if stage.is_last:
            return
        todo = dataset_pass.missing_labels("pseudo", dataset_pass.ids())
        for batch in dataset_pass.predict([dataset_pass.checkpoint(stage.name, "best")], todo, batch_size=4):
            dataset_pass.write_labels("pseudo", batch.ids, batch.labels[0])
