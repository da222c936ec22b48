"""Tiny recipes as mappings, and a view built from a plan as the core builds it."""

from __future__ import annotations

import copy

import inspect

from ssseg.engine.views import Donors, view_image, view_pseudo
from ssseg.recipe.load import merge
from ssseg.testing import TINY_RECIPE


def tiny_recipe_dict(patch=None):
    """The contract kit's tiny recipe as a mapping, with ``patch`` merged over it."""
    return merge(copy.deepcopy(TINY_RECIPE), patch or {})


def view_of_plan(plan, weak, pseudo):
    """(image, pseudo-labels) of one view built from the weak batch by ``plan``, as the core does."""
    return view_image(plan, weak.image, Donors()), view_pseudo(plan, pseudo, Donors())


def answer(plugin, hook: str, **kwargs):
    """``plugin``'s answer to ``hook``, called as pluggy calls it: with only the arguments its
    implementation takes."""
    method = getattr(plugin, hook)
    return method(**{k: v for k, v in kwargs.items() if k in inspect.signature(method).parameters})
