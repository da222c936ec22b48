"""Every ssseg module imports first, in a fresh set of ssseg modules: no import cycle depends on
which module a user (or a plugin, or a test) happens to import first."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import ssseg

MODULES = sorted(m.name for m in pkgutil.walk_packages(ssseg.__path__, "ssseg.")
                 if not m.name.startswith("ssseg.templates") and not m.name.endswith("__main__"))


def test_every_module_imports_first():
    failed = {}
    for name in MODULES:
        saved = {k: v for k, v in sys.modules.items() if k == "ssseg" or k.startswith(("ssseg.", "ssseg_plugins"))}
        for key in saved:
            del sys.modules[key]
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - reported below, by module
            failed[name] = f"{type(err).__name__}: {err}"
        finally:
            for key in [k for k in sys.modules if k == "ssseg" or k.startswith(("ssseg.", "ssseg_plugins"))]:
                del sys.modules[key]
            sys.modules.update(saved)
    assert len(MODULES) > 40 and failed == {}


def test_the_plugin_api_loads_no_suite_module():
    """``import ssseg.api`` (what every plugin does) stays clear of the suite machinery."""
    saved = {k: v for k, v in sys.modules.items() if k == "ssseg" or k.startswith(("ssseg.", "ssseg_plugins"))}
    for key in saved:
        del sys.modules[key]
    try:
        importlib.import_module("ssseg.api")
        loaded = sorted(k for k in sys.modules if k.startswith(("ssseg.suite", "ssseg.cli")))
    finally:
        for key in [k for k in sys.modules if k == "ssseg" or k.startswith(("ssseg.", "ssseg_plugins"))]:
            del sys.modules[key]
        sys.modules.update(saved)
    assert loaded == []


def test_the_dataset_registry_names_its_builders_explicitly():
    """Every dataset name comes from the registry's own tables: no module registers itself as a
    side effect of being imported."""
    from ssseg.data import registry
    assert registry.dataset_names() == ["cityscapes", "embedded", "folder", "mmseg", "pascal_voc"]
    assert not any(hasattr(module, name) for module in map(importlib.import_module, MODULES)
                   for name in ("register_dataset", "register_listed"))
