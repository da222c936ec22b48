"""docs/reproducing.md against the paper recipes: every row of its settings tables must be the
value the recipe (with the overrides its "Recipe:" line names) resolves to, every paper recipe of
iMAS, UniMatch and FixMatch has a table, and each one's optim.iters is its epochs over the shipped
split's unlabeled list at the documented 4 GPUs. Recipes are loaded and their plugins configured;
no model is built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssseg.data.splits import load_split, shipped_split_dir
from ssseg.plugin_manager import check_recipe
from ssseg.recipe.load import load_recipe, load_yaml
from ssseg.recipe.structure import unstructure

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reproducing.md"
GPUS = 4  # docs/reproducing.md: every paper recipe assumes 4 GPUs
EPOCHS = {"pascal_voc": 80, "cityscapes": 240}  # both codes: 80 on VOC, 240 on Cityscapes
SPLIT_FAMILY = {"pascal_voc": "pascal", "cityscapes": "cityscapes"}


def settings_tables(text: str) -> list[tuple[str, tuple[str, ...], list[list[str]]]]:
    """(recipe path, overrides, rows) for each table whose header has a "recipe key" column,
    under the nearest "Recipe: `path` [with `key=value` ...]" line above it."""
    blocks, recipe, table = [], None, []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if table and recipe is not None and "recipe key" in table[0]:
            blocks.append((*recipe, table[2:]))
        table = []
        match = re.match(r"Recipe: `([^`]+)`(.*)", line)
        if match:
            _, with_, rest = match.group(2).partition(" with ")
            recipe = (match.group(1), tuple(re.findall(r"`([^`]+)`", rest)) if with_ else ())
        elif line.startswith("## "):
            recipe = None
    return blocks


BLOCKS = settings_tables(DOC.read_text(encoding="utf-8"))


def plain(value):
    """Tuples as lists, so YAML lists compare equal to attrs tuples."""
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def resolved(recipe, plugins, key: str):
    """The value ``key`` resolves to: plugin parameters from the validated plugin config (defaults
    included), everything else from the resolved recipe."""
    parts = key.split(".")
    if parts[0] == "plugins" and len(parts) == 3:
        return getattr(plugins[parts[1]].config, parts[2])
    value = unstructure(recipe)
    for part in parts:
        value = value[part]
    return value


def test_every_iMAS_UniMatch_and_FixMatch_paper_recipe_has_a_table():
    documented = {path for path, _, _ in BLOCKS}
    shipped = {f"recipes/paper/{p.name}" for p in (REPO / "recipes" / "paper").glob("*.yaml")
               if p.name.split("_")[0] in ("imas", "unimatch", "fixmatch")}
    assert shipped and shipped <= documented, sorted(shipped - documented)


@pytest.mark.parametrize("path, overrides, rows", BLOCKS,
                         ids=[f"{p.split('/')[-1]}{'+' if o else ''}{'+'.join(o)}" for p, o, _ in BLOCKS])
def test_every_row_is_the_recipes_value_and_the_iterations_are_the_released_epochs(path, overrides, rows):
    recipe = load_recipe(REPO / path, list(overrides))
    plugins = check_recipe(recipe).plugins
    checked = 0
    for setting, _released, key, value in rows:
        if key == "—":
            continue
        assert key.startswith("`") and value.startswith("`"), f"{path}: row {setting!r} needs `key` and `value`"
        expected = load_yaml(value.strip("`"))
        assert plain(resolved(recipe, plugins, key.strip("`"))) == plain(expected), \
            f"{path} {' '.join(overrides)}: {setting} ({key}) is not {value}"
        checked += 1
    assert checked, f"{path}: a settings table without one checked row"
    # optim.iters = epochs × ⌊|U| / (batch_unlabeled × GPUs)⌋ over the shipped split's unlabeled list
    unlabeled = load_split(shipped_split_dir(SPLIT_FAMILY[recipe.data.dataset]), recipe.data.split).unlabeled
    per_epoch = len(unlabeled) // (recipe.data.batch_unlabeled * GPUS)
    assert recipe.optim.iters == EPOCHS[recipe.data.dataset] * per_epoch, (path, overrides)
