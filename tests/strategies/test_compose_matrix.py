"""Every shipped strategy recipe × every shipped plugin a user could add: the combination changes
training, or ``ssseg explain`` (:func:`check_recipe`) refuses it naming the plugin, the hook or
setting, and what to do. A silent no-op, or a refusal that only training gives, fails.

Recipes: ``recipes/*.yaml`` and each variant their comments give as ``ssseg train recipes/<file>
-o ...``. Plugins: ssseg's ``ssseg.plugins`` entry points that answer a decision or contribution
hook (one that only observes, like ``tensorboard``, cannot change training; the contract kit's
``acts`` rule exempts it alike), each added with its defaults (``{}``). An accepted pair trains the
recipe's tiny version (:func:`ssseg.testing.tiny_version`) from the kit's warm start and must
differ from the recipe alone beyond rounding (:func:`ssseg.testing.training_difference`).
``benchmarks/compose_matrix.py`` prints the verdicts.
"""

from __future__ import annotations

import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from ssseg.errors import UserError
from ssseg.hookspecs import HOOK_KINDS
from ssseg.plugin_manager import ENTRY_POINT_GROUP, FIRST_PARTY_DIST, check_recipe
from ssseg.recipe.load import load_recipe
from ssseg.recipe.schema import Recipe
from ssseg.testing import answering_hooks, pretrained_start, tiny_version, train_tiny, training_difference

RECIPE_DIR = Path(__file__).resolve().parents[2] / "recipes"
ITERS = 4  # one epoch per iteration at the tiny scale: the shipped warm-ups end within 2
# a refusal names a hook or a setting, and says what to do
HOOK_OR_SETTING = re.compile(rf"\b({'|'.join(HOOK_KINDS)})\b|\b(data|model|optim|unsup|eval|run)\.\w+|"
                             r"\bplugins\.\w+\.\w+")
REMEDY = re.compile(r"\b(remove|set|add)\b", re.IGNORECASE)


def shipped_recipes() -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Recipe id → (file, overrides): each ``recipes/*.yaml``, and each ``ssseg train
    recipes/<file> -o KEY=VALUE ...`` line of their comments (id: file stem + the override keys)."""
    found = {path.stem: (path, ()) for path in sorted(RECIPE_DIR.glob("*.yaml"))}
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        for line in path.read_text().splitlines():
            words = shlex.split(line.lstrip("# ")) if line.lstrip("# ").startswith("ssseg train ") else []
            if words and words[3::2] == ["-o"] * len(words[3::2]) and len(words) % 2 == 1:
                overrides = tuple(words[4::2])
                stem = Path(words[2]).stem
                found["+".join([stem, *(o.partition("=")[0] for o in overrides)])] = (RECIPE_DIR / f"{stem}.yaml",
                                                                                       overrides)
    return found


RECIPES = shipped_recipes()
SHIPPED = {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.dist.name == FIRST_PARTY_DIST}
PLUGINS = sorted(name for name, cls in SHIPPED.items() if answering_hooks(cls))


def recipe(recipe_id: str, plugin: str | None = None) -> Recipe:
    """The shipped recipe ``recipe_id``, with ``plugin`` added with its defaults."""
    path, overrides = RECIPES[recipe_id]
    return load_recipe(path, [*overrides, *([f"plugins.{plugin}={{}}"] if plugin else [])])


PAIRS = [(r, p) for r in RECIPES for p in PLUGINS if p not in recipe(r).plugins]


def refusal(recipe_id: str, plugin: str) -> str | None:
    """``ssseg explain``'s verdict on the pair: check_recipe's message, None when it passes."""
    try:
        check_recipe(recipe(recipe_id, plugin))
    except UserError as err:
        return str(err)
    return None


def refusal_problem(message: str, plugin: str) -> str | None:
    """What the refusal of adding ``plugin`` lacks, or None."""
    lacks = [what for what, ok in ((f"the plugin {plugin!r}", plugin in message),
                                   ("a hook or a setting (data.batch_unlabeled, plugins.<key>.<option>)",
                                    HOOK_OR_SETTING.search(message)),
                                   ("what to do (remove, set or add)", REMEDY.search(message))) if not ok]
    return f"the refusal lacks {' and '.join(lacks)}: {message}" if lacks else None


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The tiny version of a recipe trained from the warm start without any added plugin, once
    per recipe for the whole module."""
    runs = {}

    def run(recipe_id: str):
        if recipe_id not in runs:
            runs[recipe_id] = train_tiny(tiny_version(recipe(recipe_id), ITERS),
                                         tmp_path_factory.mktemp("alone") / recipe_id, pretrained_start())
        return runs[recipe_id]

    return run


def test_the_matrix_covers_the_shipped_recipes_and_plugins():
    assert {"quickstart", "fixmatch", "fixmatch+plugins.mean_teacher"} <= set(RECIPES)
    assert {"ohem", "confidence_threshold", "imas_hardness"} <= set(PLUGINS) and "tensorboard" not in PLUGINS


def test_every_refusal_names_the_plugin_the_hook_or_setting_and_what_to_do():
    problems = [f"{r} + {p}: {problem}" for r, p in PAIRS
                for message in [refusal(r, p)] if message is not None
                for problem in [refusal_problem(message, p)] if problem]
    assert not problems, f"{len(problems)} refusals say too little:\n" + "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize(("recipe_id", "plugin"), PAIRS, ids=[f"{r}+{p}" for r, p in PAIRS])
def test_an_accepted_plugin_changes_training(recipe_id, plugin, alone, tmp_path):
    message = refusal(recipe_id, plugin)
    if message is not None:
        pytest.skip(f"refused (the message is checked above): {message.splitlines()[0]}")
    try:
        added = train_tiny(tiny_version(recipe(recipe_id, plugin), ITERS), tmp_path / "run", pretrained_start())
    except UserError as err:
        pytest.fail(f"ssseg explain accepts {plugin} in {recipe_id}, but training refuses it: {err}")
    difference = training_difference(added, alone(recipe_id))
    assert difference is not None, (
        f"adding {plugin!r} to {recipe_id} is a silent no-op: check_recipe accepts it, and {ITERS} iterations "
        f"from a warm start train exactly as {recipe_id} alone (every loss term and weight equal up to "
        f"rounding): its answers to {', '.join(answering_hooks(SHIPPED[plugin]))} are dropped. Refuse the "
        "pair in validate, naming the plugin, the hook and what to remove or set")
