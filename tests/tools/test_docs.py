"""The docs agree with the code: the hook reference is generated from the hook specs, the recipe
reference from the recipe schema; the augmentation API's summary names what ssseg.augment has, and
what the strategies page and the classic recipe say of mse_consistency's hooks is what it answers;
CONTRIBUTING.md's example plugin passes the contract kit, as its recipe and spec describe it."""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import tomllib
import types
import typing
from pathlib import Path

import attrs
import yaml

from ssseg import augment, hookdoc, recipedoc
from ssseg.compat import implemented_hooks
from ssseg.step_table import HOOKS
from ssseg.hookspecs import HOOK_KINDS
from ssseg.plugin_manager import check_recipe
from ssseg.recipe.schema import Recipe
from ssseg.recipe.structure import unstructure
from ssseg.testing import tiny_recipe

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "hooks.md"
RECIPES = DOCS / "recipes.md"
AUGMENTATION = DOCS / "augmentation.md"
STRATEGIES = DOCS / "strategies.md"
CLASSIC = DOCS.parent / "recipes" / "mean_teacher.yaml"
CONTRIBUTING = DOCS.parent / "CONTRIBUTING.md"


def test_hook_reference_is_generated_from_the_specs():
    assert DOC.read_text() == hookdoc.render(), \
        "docs/hooks.md is out of date: run python -m ssseg.hookdoc > docs/hooks.md"


def test_hook_reference_documents_every_hook_and_every_field():
    text = DOC.read_text()
    from ssseg import hookspecs
    from ssseg.engine import types
    for name in hookspecs.HOOK_KINDS:
        assert f"### `{name}(" in text
    for cls in (types.StepContext, types.Pseudo, types.StudentOutputs, types.ViewInput):
        for field in cls.__attrs_attrs__:
            assert f"`{field.name}`" in text and field.name in (cls.__doc__ or ""), (cls.__name__, field.name)


def test_recipe_reference_is_generated_from_the_schema():
    assert RECIPES.read_text() == recipedoc.render(), \
        "docs/recipes.md is out of date: run python -m ssseg.recipedoc > docs/recipes.md"


def schema_keys(cls: type = Recipe, prefix: str = "") -> dict[str, tuple[object, object]]:
    """{key path: (default, annotation)} of every recipe key, sections expanded."""
    hints, out = typing.get_type_hints(cls), {}
    for name, default in unstructure(cls()).items():
        if attrs.has(hints[name]):
            out |= schema_keys(hints[name], f"{prefix}{name}.")
        else:
            out[prefix + name] = (default, hints[name])
    return out


def test_recipe_reference_gives_every_key_its_type_default_valid_values_and_meaning():
    tables = re.findall(r"^\| key \| type \| default \| valid \| meaning \|\n\|[-|]+\|\n((?:\|.*\n)+)",
                        RECIPES.read_text(), re.M)
    rows = {cells[0].strip("`"): cells[1:] for table in tables
            for cells in (line.strip("| ").split(" | ") for line in table.splitlines())}
    keys = schema_keys()
    assert sorted(rows) == sorted(keys)
    for path, (default, annotation) in keys.items():
        kind, shown, valid, meaning = rows[path]
        assert yaml.safe_load(shown.strip("`")) == default, path
        assert kind and valid and meaning, path
        if typing.get_origin(annotation) is typing.Literal:
            assert re.findall(r"`([^`]+)`", valid) == list(typing.get_args(annotation)), path


def test_augmentation_api_summary_names_the_public_api_its_options_and_the_plans_fields():
    block = re.search(r"from ssseg.augment import \(\n(.*?)^\)", AUGMENTATION.read_text(), re.S | re.M)[1]
    entries: dict[str, str] = {}  # name -> its comment, continuation lines included
    for line in block.splitlines():
        code, _, comment = line.partition("#")
        names = re.findall(r"\w+", code)
        for name in names:
            entries[name] = comment
        if not names:
            entries[list(entries)[-1]] += " " + comment
    assert sorted(entries) == sorted(augment.__all__)
    plan_fields = [f.name for f in dataclasses.fields(augment.PhotometricPlan)]
    assert re.findall(r"(\w+) \[B, n\]", entries["PhotometricPlan"]) == plan_fields
    for name, comment in entries.items():
        function = getattr(augment, name)
        if inspect.isfunction(function):
            options = [p.name for p in inspect.signature(function).parameters.values()
                       if p.default is not inspect.Parameter.empty]
            assert re.findall(r"(\w+)=", comment) == options, name


def test_strategies_and_the_classic_recipe_name_the_hooks_mse_consistency_answers():
    from ssseg_plugins.mse_consistency import MSEConsistency

    hooks = sorted(implemented_hooks(MSEConsistency))
    assert "decision" not in {HOOK_KINDS[h] for h in hooks}  # so it composes with view planners
    page = re.search(r"`mse_consistency` answers only\s+(.*?), no decision hook", STRATEGIES.read_text(),
                     re.S)
    assert sorted(re.findall(r"`(\w+)`", page[1])) == hooks
    comments = " ".join(line.lstrip("# ") for line in CLASSIC.read_text().splitlines()
                        if line.startswith("#"))
    recipe = re.search(r"mse_consistency answers only (.*?) \(no decision hook\)", comments)
    assert sorted(re.findall(r"\w+", recipe[1].replace(" and ", " "))) == hooks


def test_contributing_example_plugin_passes_the_contract_kit_from_its_recipe(monkeypatch):
    text = CONTRIBUTING.read_text()
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", text, re.S | re.M)
    module = types.ModuleType("my_module")  # the module its recipe's use: names
    monkeypatch.setitem(sys.modules, "my_module", module)
    for language, code in blocks:
        if language == "python":
            exec(compile(code, f"{CONTRIBUTING.name} python block", "exec"), module.__dict__)
    module.test_contract()  # the second block: check_plugin(ConfidenceRamp, config={"power": 3.0})
    (recipe,) = [yaml.safe_load(code) for language, code in blocks if language == "yaml"]
    plugins = check_recipe(tiny_recipe(recipe)).plugins
    assert type(plugins["ramp"]) is module.ConfidenceRamp and plugins["ramp"].config.power == 3.0
    (toml,) = [tomllib.loads(code) for language, code in blocks if language == "toml"]
    assert toml["project"]["entry-points"]["ssseg.plugins"]["confidence_ramp"].endswith(":ConfidenceRamp")
    call = re.search(r"`weight_loss\((.*?)\)` once per view", text, re.S)[1]
    assert tuple(call.split(", ")) == HOOKS["weight_loss"].arg_names


def test_every_test_file_the_docs_cite_exists():
    """Docs name test files by their path in the folders (the scaffold's own tests/test_plugin.py
    aside, which is a new plugin's file, not ssseg's)."""
    repo = DOCS.parent
    texts = [repo / "README.md", repo / "CONTRIBUTING.md", *DOCS.glob("*.md"), repo / "benchmarks" / "RESULTS.md"]
    cited = {m for path in texts for m in re.findall(r"tests/[\w/]+\.py", path.read_text())}
    assert cited and sorted(c for c in cited - {"tests/test_plugin.py"} if not (repo / c).is_file()) == []
