"""Recipes: loading, extends, overrides, merge laws and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ssseg.cli import main
from ssseg.plugin_manager import check_recipe
from ssseg.recipe.load import build_recipe, dump_recipe, load_recipe, merge, parse_override
from ssseg.recipe.schema import Recipe
from ssseg.recipe.structure import ConfigError, structure, unstructure

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_every_shipped_recipe_validates_with_its_plugins():
    recipes = [p for p in (REPO / "recipes").rglob("*.yaml") if "suites" not in p.parts]
    assert recipes
    for path in recipes:
        recipe = load_recipe(path)
        check_recipe(recipe)  # plugin configs and hook conflicts


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    write(tmp_path / "base.yaml", {"data": {"crop": 48, "scale": [0.5, 2.0]},
                                   "plugins": {"a": {"x": 1}, "b": {}}})
    child = write(tmp_path / "child.yaml", {"extends": "base.yaml", "data": {"scale": [1.0, 1.5]},
                                            "plugins": {"a": {"y": 2}, "b": None}})
    data = merge({}, __import__("ssseg.recipe.load", fromlist=["x"]).resolve_extends(child))
    assert data["data"] == {"crop": 48, "scale": [1.0, 1.5]}
    assert data["plugins"] == {"a": {"x": 1, "y": 2}}


def test_null_plugin_without_parent_means_no_params(tmp_path):
    path = write(tmp_path / "r.yaml", "plugins:\n  supervised:\n")
    assert load_recipe(path).plugins == {"supervised": {}}


def test_overrides_apply_last_and_parse_yaml_scalars(tmp_path):
    path = write(tmp_path / "r.yaml", {"optim": {"iters": 10}})
    recipe = load_recipe(path, ["optim.iters=50", "model.encoder_weights=null", "data.split=92"])
    assert recipe.optim.iters == 50 and recipe.model.encoder_weights is None
    assert recipe.data.split == "92"


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    path = write(tmp_path / "r.yaml", "optim: {lr: 1e-3, weight_decay: 5E-4}\n")
    recipe = load_recipe(path, ["optim.head_lr_mult=1e1"])
    assert (recipe.optim.lr, recipe.optim.weight_decay, recipe.optim.head_lr_mult) == (0.001, 0.0005, 10.0)
    assert load_recipe(path, ["data.split='1e3'"]).data.split == "1e3"  # quoted stays a string


@pytest.mark.parametrize("text", ["optim.iters", "=3", "a..b=1"])
def test_malformed_override_is_an_error(text):
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override(text)


@pytest.mark.parametrize("patch, path, message", [
    ({"optim": {"itres": 5}}, "optim.itres", "unknown key; valid keys: .*iters"),
    ({"optim": {"iters": "many"}}, "optim.iters", "expected an integer"),
    ({"optim": {"lr": -1.0}}, "optim.lr", r"out of range; valid: \(0, inf\]"),
    ({"optim": {"name": "adam"}}, "optim.name", "'adam' is not one of 'sgd', 'adamw'"),
    ({"data": {"scale": [2.0, 1.0]}}, "data.scale", "low <= high"),
    ({"eval": {"mode": "slide"}}, "eval.mode", "not one of"),
    ({"seed": 1.5}, "seed", "expected an integer"),
    ({"data": {"crop": 100000}}, "data.crop", r"100000 is out of range; valid: \[1, 4096\] pixels: .* "
                                              r"one RGB float image of 100000×100000 alone takes 112 GiB"),
])
def test_bad_values_name_the_file_and_key(tmp_path, patch, path, message):
    recipe = write(tmp_path / "bad.yaml", patch)
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    assert str(err.value).startswith(f"{recipe}: {path}: ")
    assert err.match(message)


def test_every_wrong_key_of_a_recipe_is_reported_at_once(tmp_path, capsys):
    recipe = write(tmp_path / "bad.yaml", {"optim": {"itres": 5, "lr": -1.0, "iters": 0},
                                           "data": {"scale": ["x", None], "crop": "many"},
                                           "plugins": {"a": 1, "b": [2]}, "seed": 1.5})
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    assert [f"{e.path}: {e.message}" for e in err.value.errors] == [  # the file's keys are sorted
        "data.crop: expected an integer, got str 'many'",
        "data.scale[0]: expected a number, got str 'x'",   # every item of a list
        "data.scale[1]: expected a number, got null None",
        "optim.itres: unknown key; valid keys: clip_grad, head_lr_mult, iters, lr, momentum, name, "
        "power, schedule, weight_decay",
        "optim.lr: -1.0 is out of range; valid: (0, inf]",   # two validators of one section
        "optim.iters: 0 must be > 0",
        "plugins.a: expected a mapping, got int",          # every value of a mapping
        "plugins.b: expected a mapping, got list",
        "seed: expected an integer, got float 1.5",
    ]
    assert main(["explain", str(recipe)]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith(f"ssseg: error: 9 errors in {recipe}:\n  {recipe}: data.crop: expected")
    assert all(line.startswith(f"  {recipe}: ") for line in printed.splitlines()[1:])
    assert "Traceback" not in printed


def test_plugin_config_errors_name_the_recipe_file_like_recipe_errors(tmp_path, capsys):
    recipe = write(tmp_path / "bad.yaml", {"plugins": {"ohem": {"min_kept": -5}}})
    with pytest.raises(ConfigError) as err:
        check_recipe(load_recipe(recipe))
    assert str(err.value) == f"{recipe}: plugins.ohem.min_kept: -5 is out of range; valid: [0, inf]"
    assert main(["explain", str(recipe)]) == 2
    assert capsys.readouterr().err == f"ssseg: error: {err.value}\n"


def test_every_plugin_config_error_is_reported_at_once(tmp_path):
    recipe = write(tmp_path / "bad.yaml", {"plugins": {"ohem": {"min_kept": -5, "thresh": 2.0},
                                                       "supervised": {"x": 1}}})
    with pytest.raises(ConfigError) as err:
        check_recipe(load_recipe(recipe))
    assert [str(e) for e in err.value.errors] == [
        f"{recipe}: plugins.ohem.thresh: 2.0 is out of range; valid: [0, 1]",
        f"{recipe}: plugins.ohem.min_kept: -5 is out of range; valid: [0, inf]",
        f"{recipe}: plugins.supervised.x: unknown key; plugins.supervised takes no options",
    ]


def test_the_recipe_file_is_no_recipe_key(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.yaml", {"seed": 3}))
    assert recipe.source == str(tmp_path / "r.yaml")
    assert "source" not in yaml.safe_load(dump_recipe(recipe))
    with pytest.raises(ConfigError, match="source: unknown key; valid keys: data, eval, model"):
        build_recipe({"source": "elsewhere.yaml"})


def test_yaml_syntax_error_names_the_line(tmp_path):
    recipe = write(tmp_path / "bad.yaml", "optim:\n  iters: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+: invalid YAML"):
        load_recipe(recipe)


def test_circular_extends_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match="circular extends"):
        load_recipe(tmp_path / "a.yaml")


def test_missing_parent_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "nope.yaml"})
    with pytest.raises(ConfigError, match="parent recipe 'nope.yaml' not found"):
        load_recipe(tmp_path / "a.yaml")


scalars = st.one_of(st.integers(-5, 5), st.booleans(), st.text("abc", max_size=3), st.none())
# Keys keep their type across files (a section stays a mapping), as in real recipes.
trees = st.recursive(
    st.dictionaries(st.sampled_from(["a", "b"]), scalars, max_size=2),
    lambda inner: st.fixed_dictionaries({}, optional={"m": inner, "n": inner, "a": scalars}),
    max_leaves=8)
mappings = st.fixed_dictionaries({}, optional={"m": trees, "n": trees, "a": scalars, "b": scalars})


@given(mappings)
def test_merge_with_empty_patch_is_identity(base):
    assert merge(base, {}) == base


@given(mappings, mappings, mappings)
def test_merge_is_associative(a, b, c):
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(mappings)
def test_merge_with_itself_is_idempotent(a):
    assert merge(a, a) == a


@given(st.integers(0, 10**6), st.sampled_from(["sgd", "adamw"]), st.integers(1, 10**5),
       st.floats(1e-6, 1.0), st.dictionaries(st.sampled_from(["p", "q"]), st.dictionaries(
           st.sampled_from(["tau", "decay"]), st.floats(0, 1), max_size=2), max_size=2))
def test_recipe_round_trips_through_yaml(seed, optim, iters, lr, plugins):
    recipe = build_recipe({"seed": seed, "optim": {"name": optim, "iters": iters, "lr": lr},
                           "plugins": plugins})
    again = build_recipe(yaml.safe_load(dump_recipe(recipe)))
    assert again == recipe
    assert structure(Recipe, unstructure(recipe)) == recipe
