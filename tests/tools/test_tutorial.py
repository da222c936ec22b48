"""docs/writing-a-plugin.md cannot rot: its Python blocks run in order, its YAML blocks validate
(recipes with their plugins, suites with their variants), its TOML blocks parse."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

from ssseg import plugin_manager
from ssseg.suite.spec import load_suite
from ssseg.testing import validate_recipe

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-plugin.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
MODULE = "writing_a_plugin"


def blocks(language: str) -> list[str]:
    """The fenced blocks of ``language`` in the tutorial, in order."""
    return [body for lang, body in FENCE.findall(DOC.read_text()) if lang == language]


@pytest.fixture
def tutorial(monkeypatch):
    """The tutorial's Python blocks run in order as module ``writing_a_plugin``, whose plugin is
    installed as the entry point ``class_balance``."""
    module = types.ModuleType(MODULE)
    monkeypatch.setitem(sys.modules, MODULE, module)
    monkeypatch.setitem(sys.modules, "my_module", module)  # what the examples' use: lines name
    for i, code in enumerate(blocks("python")):
        exec(compile(code, f"{DOC.name} python block {i + 1}", "exec"), module.__dict__)
    installed = [ep for ep in entry_points(group=plugin_manager.ENTRY_POINT_GROUP) if ep.name != "class_balance"]
    fake = EntryPoint("class_balance", f"{MODULE}:ClassBalance", plugin_manager.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugin_manager, "entry_points", lambda group: installed + [fake])
    monkeypatch.delenv(plugin_manager.AUTOLOAD_ENV, raising=False)
    return module


def test_python_blocks_run_and_define_the_plugin(tutorial):
    assert tutorial.ClassBalance.name == "class_balance"


def test_yaml_blocks_are_valid_recipes_and_suites(tutorial, tmp_path):
    for code in blocks("yaml"):
        name = re.match(r"# (\S+\.yaml)\n", code)
        assert name, f"a YAML block must start with '# <file>.yaml':\n{code}"
        (tmp_path / name[1]).write_text(code)
    for path in sorted(tmp_path.glob("*.yaml")):
        if "variants:" in path.read_text():
            assert load_suite(path).jobs
        else:
            assert {"class_balance", "self_train"} & set(validate_recipe(path).plugins)


def test_toml_blocks_parse():
    for code in blocks("toml"):
        assert tomllib.loads(code)


def test_the_second_example_keeps_the_contract(tutorial, tmp_path):
    from ssseg.testing import check_plugin
    check_plugin(tutorial.AuxiliaryDecoder, workdir=tmp_path, **tutorial.AUX_CONTRACT)


@pytest.mark.parametrize("name", ["LabeledPatches", "AgreementFilter", "TrustHead"])
def test_the_compose_examples_keep_the_contract(tutorial, tmp_path, name):
    from ssseg.testing import check_plugin
    assert getattr(tutorial, name) in tutorial.COMPOSE_EXAMPLES
    check_plugin(getattr(tutorial, name), workdir=tmp_path)
