"""Suite files: schema errors, variant expansion and patch semantics, the shipped suites."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from support.recipes import tiny_recipe_dict
from ssseg.cli import main
from ssseg.recipe.load import build_recipe, load_recipe
from ssseg.recipe.structure import ConfigError
from ssseg.suite.spec import Suite, Variant, load_suite, variant_data

SUITES = sorted((Path(__file__).resolve().parents[2] / "recipes" / "suites").glob("*.yaml"))
BASE_PLUGINS = {"mean_teacher": {"decay": 0.9}, "fixmatch": {}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder holding ``base.yaml``, the tiny recipe with a mean-teacher FixMatch."""
    folder = tmp_path_factory.mktemp("suite")
    (folder / "base.yaml").write_text(yaml.safe_dump(tiny_recipe_dict({"plugins": BASE_PLUGINS})))
    return folder


def write_suite(folder: Path, suite: dict, name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(suite))
    return path


def expand(folder: Path, patch: dict, overrides: dict | None = None):
    spec = Suite(variants={"v": Variant(patch=patch)}, base="base.yaml", overrides=overrides or {})
    return build_recipe(variant_data(spec, "v", folder))


def test_an_empty_patch_gives_the_base_recipe(folder):
    assert expand(folder, {}) == load_recipe(folder / "base.yaml")


@settings(max_examples=30, deadline=None)
@given(removed=st.sampled_from(sorted(BASE_PLUGINS)), added=st.sampled_from(["imas_hardness", "ohem"]))
def test_null_removes_a_plugin_and_a_mapping_adds_one(folder, removed, added):
    plugins = expand(folder, {"plugins": {removed: None, added: {}}}).plugins
    assert removed not in plugins and added in plugins
    assert set(plugins) == set(BASE_PLUGINS) - {removed} | {added}


@settings(max_examples=30, deadline=None)
@given(lr=st.floats(1e-5, 1.0), iters=st.integers(1, 10_000), decay=st.floats(0.0, 0.999),
       suite_iters=st.integers(1, 10_000))
def test_a_patch_overrides_the_base_and_the_suite_overrides(folder, lr, iters, decay, suite_iters):
    patch = {"optim": {"lr": lr, "iters": iters}, "plugins": {"mean_teacher": {"decay": decay}}}
    recipe = expand(folder, patch, {"optim": {"iters": suite_iters}, "eval": {"every": 7}})
    assert (recipe.optim.lr, recipe.optim.iters) == (lr, iters)
    assert recipe.plugins["mean_teacher"] == {"decay": decay}
    assert recipe.eval.every == 7                       # suite overrides reach every variant
    assert recipe.data == load_recipe(folder / "base.yaml").data


def test_expansion_is_variants_times_seeds_with_seed_and_command_line_overrides(folder):
    path = write_suite(folder, {"base": "base.yaml", "seeds": [3, 4], "overrides": {"optim": {"iters": 5}},
                                "variants": {"a": {}, "b": {"patch": {"plugins": {"fixmatch": None}}},
                                             "c": {"recipe": "base.yaml", "patch": {"optim": {"lr": 0.5}}}}})
    suite = load_suite(path, ["optim.iters=9"])
    assert [j.name for j in suite.jobs] == ["a/seed3", "a/seed4", "b/seed3", "b/seed4", "c/seed3", "c/seed4"]
    assert [j.recipe.seed for j in suite.jobs] == [3, 4] * 3
    assert {j.recipe.optim.iters for j in suite.jobs} == {9}
    assert "fixmatch" not in suite.jobs[2].recipe.plugins and suite.jobs[4].recipe.optim.lr == 0.5
    assert suite.spec.reference is None and suite.supervised_variants == ()


@pytest.mark.parametrize("suite, message", [
    ({"base": "base.yaml", "variants": {"a": {"pach": {}}}}, "variants.a.pach: unknown key"),
    ({"base": "base.yaml", "variants": {"a": {}}, "seeds": "0"}, "seeds: expected a list"),
    ({"base": "base.yaml", "variants": {"a": {}}, "seed": [0]}, "seed: unknown key"),
    ({"base": "base.yaml", "variants": {"a": {}}, "reference": "b"}, "reference: 'b' is not a variant"),
    ({"base": "base.yaml", "variants": {}}, "variants: a suite needs at least one variant"),
    ({"variants": {"a": {}}}, "variants.a: no recipe"),
    ({"base": "base.yaml", "variants": {"a/b": {}}}, "variants.a/b: a variant name must be a folder name"),
    ({"base": "base.yaml", "variants": {"a": {}}, "seeds": [1, 1]}, "seeds: expected a non-empty list"),
    ({"base": "base.yaml", "variants": {"a": {}}, "axis": {"key": "data.split"}}, "axis.values: expected a non-empty list"),
    ({"base": "base.yaml", "variants": {"a": {}}, "axis": {"key": "seed", "values": [1]}}, "axis.key: expected a dotted"),
    ({"base": "base.yaml", "variants": {"a": {}}, "axis": {"key": "data.split", "values": ["1/8"]}},
     "axis.values[0]: '1/8': an axis value must be"),
    ({"base": "base.yaml", "variants": {"a": {}}, "axis": {"key": "data.split", "values": [8, "8"]}},
     "axis.values: expected distinct values"),
    ({"base": "base.yaml", "variants": {"a": {}}, "launcher": {"partiton": "gpu"}}, "launcher.partiton: unknown key"),
    ({"base": "base.yaml", "variants": {"a": {}}, "launcher": {"gpus_per_run": -1}},
     "launcher.gpus_per_run: -1 is out of range"),
    ({"base": "base.yaml", "variants": {"a": {}}, "launcher": {"sbatch": {"signal": "USR1@60"}}},
     "launcher.sbatch.signal: 'signal' is set by the launcher"),
])
def test_bad_suites_name_the_file_and_key(folder, suite, message):
    path = write_suite(folder, suite, "bad.yaml")
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


@pytest.mark.parametrize("patch, message", [
    ({"optim": {"lr": -1.0}}, "variants.bad: optim.lr: -1.0 is out of range"),
    ({"plugins": {"mean_teacher": {"decai": 0.9}}}, "variants.bad: plugins.mean_teacher.decai: unknown key"),
    ({"plugins": {"no_such_plugin": {}}}, "variants.bad: "),
    ({"plugins": {"unimatch": {}}}, "variants.bad: plugins 'fixmatch' and 'unimatch' both answer the "
                                    "decision hook 'pseudo_label_source'"),
])
def test_a_bad_variant_fails_at_load_naming_the_file_and_variant(folder, patch, message):
    path = write_suite(folder, {"base": "base.yaml", "variants": {"good": {}, "bad": {"patch": patch}}},
                       "bad_variant.yaml")
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_an_axis_is_crossed_with_variants_and_seeds_and_set_after_patches_and_overrides(folder):
    path = write_suite(folder, {"base": "base.yaml", "seeds": [0, 1],
                                "axis": {"key": "data.split", "values": [4, 8], "label": "labels"},
                                "variants": {"sup": {"patch": {"data": {"batch_unlabeled": 0}, "plugins": {
                                    "mean_teacher": None, "fixmatch": None, "supervised": {}}}},
                                             "uni": {"patch": {"data": {"split": "2"}}}}})
    suite = load_suite(path)
    assert [j.name for j in suite.jobs] == ["sup/4/seed0", "sup/4/seed1", "sup/8/seed0", "sup/8/seed1",
                                            "uni/4/seed0", "uni/4/seed1", "uni/8/seed0", "uni/8/seed1"]
    assert [j.recipe.data.split for j in suite.jobs] == ["4", "4", "8", "8"] * 2  # the axis over the patch
    assert [j.recipe.seed for j in suite.jobs] == [0, 1] * 4
    assert suite.spec.axis.title == "labels" and suite.supervised_variants == ("sup",)


@pytest.mark.parametrize("override, message", [
    ("seed=7", "-o seed=7: the suite sets seed in every run (seeds 0, 1 in {path}); choose the seeds with "
               "--seeds, e.g. --seeds 0 or --seeds 0,1"),
    ("data.split=20", "-o data.split=20: the suite's axis sets data.split in every run (values 4, 8 in {path}); "
                      "change axis.values in the suite file"),
    ("data={split: 20, crop: 32}", "-o data={split: 20, crop: 32}: the suite's axis sets data.split"),
])
def test_an_override_of_the_seed_or_the_axis_key_is_refused_with_the_reason(folder, capsys, override, message):
    path = write_suite(folder, {"base": "base.yaml", "seeds": [0, 1], "variants": {"a": {}},
                                "axis": {"key": "data.split", "values": [4, 8]}}, "owned.yaml")
    assert main(["suite", "run", str(path), "--dry-run", "--out", str(folder / "x"), "-o", override]) == 2
    assert capsys.readouterr().err.startswith("ssseg: error: " + message.replace("{path}", str(path)))
    assert load_suite(path, ["data.crop=32"]).jobs[0].recipe.data.crop == 32   # other keys are fine


def test_seeds_replace_the_suites_seeds(folder, capsys):
    path = write_suite(folder, {"base": "base.yaml", "seeds": [0, 1, 2], "variants": {"a": {}, "b": {}}}, "seeds.yaml")
    assert [(j.name, j.recipe.seed) for j in load_suite(path, seeds=[5]).jobs] == [("a/seed5", 5), ("b/seed5", 5)]
    assert main(["suite", "run", str(path), "--dry-run", "--out", str(folder / "y"), "--seeds", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[::2] == ["a/seed0: new (2 iterations)", "b/seed0: new (2 iterations)"]
    for seeds, message in (("0,0", "--seeds 0,0: expected distinct seeds"), ("a", "--seeds a: expected whole numbers")):
        assert main(["suite", "run", str(path), "--dry-run", "--seeds", seeds]) == 2
        assert message in capsys.readouterr().err


def test_a_missing_variant_recipe_is_named(folder):
    path = write_suite(folder, {"variants": {"x": {"recipe": "nope.yaml"}}}, "missing.yaml")
    with pytest.raises(ConfigError, match=r"variants\.x: recipe .*nope\.yaml' not found"):
        load_suite(path)


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suites_validate(path):
    suite = load_suite(path)
    assert len(suite.jobs) == len(suite.spec.variants) * len(suite.spec.points()) * len(suite.spec.seeds)
