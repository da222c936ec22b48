"""Shared fixtures: tiny recipes on the embedded data that train in a second or two on CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["SSSEG_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import subprocess  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from ssseg.testing import tiny_recipe  # noqa: E402


torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))  # test plugins importable with use: "support.recorder:..."


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test that starts ssseg processes (seconds each); "
                                       "-m 'not slow' skips them")


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``cuda`` without a CUDA device."""
    if not torch.cuda.is_available():
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture(autouse=True)
def _processes_only_in_slow_tests(request, monkeypatch):
    """A test that starts a process is marked ``slow`` (.ci/run runs those after the rest)."""
    if "slow" in request.keywords:
        return
    def refuse(self, args, *rest, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a process ({args!r}): mark it @pytest.mark.slow")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture
def tiny():
    """Factory fixture: ``tiny(patch) -> Recipe``."""
    return tiny_recipe
