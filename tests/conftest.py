"""Shared fixtures: tiny recipes on the embedded data that train in a second or two on CPU."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["SSSEG_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import copy  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from ssseg.recipe.load import build_recipe, merge  # noqa: E402

torch.set_num_threads(1)

TINY: dict[str, Any] = {
    "seed": 0,
    "model": {"arch": "Unet", "encoder": "resnet18",
              "options": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}},
    "data": {"dataset": "embedded", "split": "8", "crop": 32, "batch_labeled": 2,
             "batch_unlabeled": 2, "options": {"size": 32, "train": 24, "val": 6}},
    "optim": {"name": "sgd", "lr": 0.01, "iters": 2},
    "eval": {"every": 1000},
    "run": {"log_every": 1, "checkpoint_every": 1000},
    "plugins": {},
}


def tiny_recipe_dict(patch: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tiny recipe as a mapping, with ``patch`` merged over it."""
    return merge(copy.deepcopy(TINY), patch or {})


def tiny_recipe(patch: dict[str, Any] | None = None):
    """A validated tiny :class:`~ssseg.recipe.schema.Recipe` (semi-supervised batches unless
    the patch sets ``data.batch_unlabeled: 0``)."""
    return build_recipe(tiny_recipe_dict(patch), "<tiny>")


@pytest.fixture
def tiny():
    """Factory fixture: ``tiny(patch) -> Recipe``."""
    return tiny_recipe

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # test plugins importable with use: "recorder:..."
