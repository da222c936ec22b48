"""Everything a strategy plugin may import. Anything not exported here is private to ssseg.

A plugin is a class with a ``name``, a frozen attrs ``Config`` (defaults and validators), hook
implementations marked with :data:`hookimpl`, and optionally ``state_dict()`` /
``load_state_dict()`` for state that must survive a checkpoint. See CONTRIBUTING.md.
"""

from ssseg.engine.distributed import all_reduce_sum_
from ssseg.engine.run import Run
from ssseg.engine.types import (AugmentationPlan, FeatureRequest, Features, LabeledBatch, LossTerm,
                                Pseudo, StepContext, StudentOutputs, UnlabeledBatch, View, ViewInput)
from ssseg.errors import UserError
from ssseg.models import SegModel, eval_mode
from ssseg.hookspecs import HOOKSPEC_VERSION, hookimpl
from ssseg.recipe.validators import in_range, positive
from ssseg.suite.predict import evaluation_grid


class Plugin:
    """Optional base class: stores the validated ``config``. ``recipe_key`` is the key under
    ``plugins:`` this instance was built from (set by the core on every plugin; messages name it)."""

    name: str = ""
    recipe_key: str = ""

    def __init__(self, config):
        self.config = config


__all__ = ["AugmentationPlan", "FeatureRequest", "Features", "HOOKSPEC_VERSION", "LabeledBatch", "LossTerm",
           "Plugin", "Pseudo", "Run", "SegModel", "StepContext", "StudentOutputs", "UnlabeledBatch",
           "UserError", "View", "ViewInput", "all_reduce_sum_", "eval_mode", "evaluation_grid", "hookimpl",
           "in_range", "positive"]
