"""The references in docs/ are the ones generated from the code: the hook reference from the hook
specs, the recipe reference from the recipe schema."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import attrs
import yaml

from ssseg import hookdoc, recipedoc
from ssseg.recipe.schema import Recipe
from ssseg.recipe.structure import unstructure

DOCS = Path(__file__).resolve().parents[1] / "docs"
DOC = DOCS / "hooks.md"
RECIPES = DOCS / "recipes.md"


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
