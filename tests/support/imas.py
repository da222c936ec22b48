"""Shared helpers of the iMAS plugin tests: a step context and the contract checks."""

from __future__ import annotations

import math

import torch

from ssseg.testing import tiny_recipe
from ssseg.api import StepContext
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer

# The iMAS recipe on the tiny fixture; τ lowered so that a few-step model passes it.
IMAS = {"mean_teacher": {"decay": 0.996, "warmup_epochs": 1},
        "confidence_threshold": {"threshold": 0.3},
        "imas_hardness": {"threshold": 0.3},
        "imas_weighting": {},
        "imas_augmentation": {}}


def make_ctx(student=None, num_classes: int = 3, seed: int = 0, teacher=None) -> StepContext:
    """A step context on the CPU with seeded generators (the teacher is the student unless given)."""
    student = student if student is not None else torch.nn.Identity()
    teacher = teacher if teacher is not None else student
    return StepContext(iteration=0, max_iters=10, epoch=0, iters_per_epoch=10,
                       device=torch.device("cpu"), rank=0, world_size=1,
                       generator=torch.Generator().manual_seed(seed),
                       shared_generator=torch.Generator().manual_seed(seed + 1),
                       student=student, teacher=teacher, num_classes=num_classes, ignore_index=255)


def steps(trainer: Trainer, n: int) -> dict[str, float]:
    """Run ``n`` training steps from the trainer's current iteration; the last step's logs."""
    batches = trainer.batches()
    for _ in range(n):
        logs = trainer.step(*next(batches)).logs
    return logs


def two_iterations_are_finite(plugins: dict) -> dict[str, float]:
    """Train two iterations of the tiny recipe with ``plugins``; return the last step's logs."""
    logs = steps(Trainer(build_run(tiny_recipe({"optim": {"iters": 2}, "plugins": plugins}))), 2)
    assert all(math.isfinite(v) for v in logs.values()), logs
    return logs
