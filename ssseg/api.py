"""Everything a strategy plugin may import. Anything not exported here is private to ssseg.

A plugin is a class with a ``name``, a frozen attrs ``Config`` (defaults and validators), hook
implementations marked with :data:`hookimpl`, and optionally ``state_dict()`` /
``load_state_dict()`` for state that must survive a checkpoint. See CONTRIBUTING.md.
"""

from ssseg.engine.distributed import all_reduce_sum_
from ssseg.engine.run import Run
from ssseg.engine.types import (AugmentationPlan, Pseudo, StepContext, StudentOutputs,
                                UnlabeledBatch, View)
from ssseg.errors import UserError
from ssseg.hookspecs import HOOKSPEC_VERSION, hookimpl
from ssseg.recipe.validators import in_range, positive


class Plugin:
    """Optional base class: stores the validated ``config``."""

    name: str = ""

    def __init__(self, config):
        self.config = config


__all__ = ["AugmentationPlan", "all_reduce_sum_", "HOOKSPEC_VERSION", "Plugin", "Pseudo", "Run", "StepContext",
           "StudentOutputs", "UnlabeledBatch", "UserError", "View", "hookimpl", "in_range",
           "positive"]
