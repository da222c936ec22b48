"""Test plugins with a bug outside the hooks, or a state that takes time to save
(importable via ``use: "support.faulty:..."``)."""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import numpy as np
import torch

from ssseg.api import Plugin, hookimpl


@attrs.frozen
class NoConfig:
    pass


class BrokenInit(Plugin):
    """Fails in its constructor."""

    Config = NoConfig

    def __init__(self, config):
        super().__init__(config)
        self.scale = 1 / 0


class StateFails(Plugin):
    """Its ``state_dict()`` raises."""

    Config = NoConfig

    def state_dict(self):
        return {"count": len(self.missing_attribute)}

    def load_state_dict(self, state):
        pass


class NumpyState(Plugin):
    """Returns a numpy array from ``state_dict()``, which a checkpoint cannot hold."""

    Config = NoConfig

    def state_dict(self):
        return {"stats": np.zeros(3)}

    def load_state_dict(self, state):
        pass


class LoadFails(Plugin):
    """Its ``load_state_dict()`` raises."""

    Config = NoConfig

    def state_dict(self):
        return {"step": torch.tensor(1)}

    def load_state_dict(self, state):
        raise ValueError(f"cannot take {sorted(state)}")


class SlowState(Plugin):
    """Saving its state writes ``marker`` and takes ``seconds``, so a test can signal a
    process while it saves a checkpoint; it also sleeps a little at every step."""

    @attrs.frozen
    class Config:
        marker: str = "saving"
        seconds: float = 5.0

    def state_dict(self):
        Path(self.config.marker).write_text("saving")
        time.sleep(self.config.seconds)
        return {}

    def load_state_dict(self, state):
        pass

    @hookimpl
    def before_iteration(self, ctx):
        time.sleep(0.1)
