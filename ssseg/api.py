"""Everything a strategy plugin may import. Anything not exported here is private to ssseg.

A plugin is a class with a ``name``, a frozen attrs ``Config`` (defaults and validators), hook
implementations marked with :data:`hookimpl`, optionally ``requires = {hook: suggested plugin}``
(hooks other plugins of the recipe must answer; checked when the recipe is), and optionally
``state_dict()`` / ``load_state_dict()`` for state that must survive a checkpoint. See
CONTRIBUTING.md and docs/hooks.md.
"""

from ssseg.ema import ema_decay, ema_update_
from ssseg.engine.distributed import all_gather_rows, all_reduce_max_, all_reduce_mean_, all_reduce_sum_
from ssseg.engine.run import BuildContext, Run
from ssseg.engine.types import (AugmentationPlan, CutMix, EvalModel, FeatureRequest, Features, LabeledBatch,
                                LossTerm, Pseudo, StepContext, StudentOutputs, UnlabeledBatch, View, ViewInput)
from ssseg.errors import UserError
from ssseg.hookspecs import HOOKSPEC_VERSION, hookimpl
from ssseg.losses import cross_entropy, weighted_view_loss
from ssseg.models import SegModel, eval_mode
from ssseg.recipe.validators import in_range, positive
from ssseg.pictures import evaluation_grid
from ssseg.stages.dataset_pass import DatasetPass
from ssseg.stages.types import PassBatch, Stage, TrainingSet


class Plugin:
    """Optional base class: stores the validated ``config``. ``recipe_key`` is the key under
    ``plugins:`` this instance was built from (set by the core on every plugin; messages name it)."""

    name: str = ""
    recipe_key: str = ""

    def __init__(self, config):
        self.config = config


__all__ = ["AugmentationPlan", "BuildContext", "CutMix", "DatasetPass", "EvalModel", "FeatureRequest", "Features",
           "HOOKSPEC_VERSION", "LabeledBatch", "LossTerm", "PassBatch", "Plugin", "Pseudo", "Run", "SegModel", "Stage",
           "StepContext", "StudentOutputs", "TrainingSet",
           "UnlabeledBatch", "UserError", "View", "ViewInput", "all_gather_rows", "all_reduce_max_",
           "all_reduce_mean_", "all_reduce_sum_", "cross_entropy", "ema_decay", "ema_update_", "eval_mode",
           "evaluation_grid", "hookimpl", "in_range", "positive", "weighted_view_loss"]
