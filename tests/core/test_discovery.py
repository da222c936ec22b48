"""Plugin discovery: entry points (lazy), use: "module:Class", autoload switch, duplicates."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pytest

from ssseg import plugin_manager
from ssseg.plugin_manager import PluginError, discover, instantiate


class FakeDist:
    def __init__(self, name):
        self.name = name


def fake_entry_point(name, value, dist):
    ep = EntryPoint(name, value, plugin_manager.ENTRY_POINT_GROUP)
    return ep._for(FakeDist(dist))


@pytest.fixture
def entry_points(monkeypatch):
    """Replace the installed entry points with a given list."""
    def use(*eps):
        monkeypatch.setattr(plugin_manager, "entry_points", lambda group: list(eps))
    return use


def test_discovery_is_lazy(entry_points, monkeypatch):
    monkeypatch.delenv(plugin_manager.AUTOLOAD_ENV, raising=False)
    entry_points(fake_entry_point("lazy", "never_imported_module:Plugin", "third"))
    assert "lazy" in discover()
    assert "never_imported_module" not in sys.modules


def test_duplicate_name_across_distributions_names_both(entry_points, monkeypatch):
    monkeypatch.delenv(plugin_manager.AUTOLOAD_ENV, raising=False)
    entry_points(fake_entry_point("ema", "a:A", "dist-one"), fake_entry_point("ema", "b:B", "dist-two"))
    with pytest.raises(PluginError, match=r"'ema' is registered by two distributions: dist-one .* dist-two"):
        discover()


def test_autoload_switch_keeps_only_first_party(entry_points, monkeypatch):
    entry_points(fake_entry_point("mine", "ssseg_plugins.supervised:Supervised", "ssseg"),
                 fake_entry_point("theirs", "x:Y", "third-party"))
    monkeypatch.setenv(plugin_manager.AUTOLOAD_ENV, "1")
    assert set(discover()) == {"mine"}
    monkeypatch.delenv(plugin_manager.AUTOLOAD_ENV)
    assert set(discover()) == {"mine", "theirs"}


def test_unknown_name_lists_close_matches():
    with pytest.raises(PluginError, match=r"unknown plugin 'supervized'; did you mean 'supervised'"):
        instantiate("supervized", {})


def test_use_loads_a_local_class_with_its_config():
    plugin = instantiate("anything", {"use": "support.recorder:Observer", "tag": "x"})
    assert type(plugin).__name__ == "Observer" and plugin.config.tag == "x"


@pytest.mark.parametrize("use, message", [
    ("recorder", "is not of the form"),
    ("no_such_module_xyz:Thing", "cannot import module 'no_such_module_xyz'"),
    ("support.recorder:Nothing", "has no attribute 'Nothing'"),
])
def test_bad_use_is_an_error(use, message):
    with pytest.raises(PluginError, match=message):
        instantiate("local", {"use": use})


def test_plugin_without_config_class_is_an_error():
    with pytest.raises(PluginError, match="has no attrs Config class"):
        instantiate("local", {"use": "support.recipes:TINY_RECIPE.copy"})
