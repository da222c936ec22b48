"""Suite files: the schema, and their expansion into one resolved recipe per variant and seed.

A variant's recipe is built in this order, each step merged over the last with
:func:`ssseg.recipe.load.merge`: the variant's ``recipe`` (or the suite's ``base``, with its
``extends:`` chain) → the suite's ``overrides`` → the variant's ``patch`` → the command line's
``-o`` overrides → ``seed: k`` (the suite owns the seeds).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

from ssseg.errors import UserError
from ssseg.plugin_manager import check_recipe
from ssseg.recipe.load import build_recipe, merge, parse_override, read_yaml, resolve_extends
from ssseg.recipe.schema import Recipe
from ssseg.recipe.structure import ConfigError, structure

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@attrs.frozen
class Variant:
    """One row of the comparison: a recipe (default: the suite's ``base``) and a patch over it."""

    recipe: str | None = None
    patch: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Suite:
    """A suite file: variants × seeds, compared to the ``reference`` variant."""

    variants: dict[str, Variant] = attrs.field(factory=dict)
    base: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    overrides: dict[str, Any] = attrs.field(factory=dict)
    reference: str | None = None


@attrs.frozen
class Job:
    """One training run of a suite: ``<out>/<variant>/seed<seed>/``."""

    variant: str
    seed: int
    recipe: Recipe

    @property
    def name(self) -> str:
        """``variant/seed<k>``, the run's folder relative to the suite's output folder."""
        return f"{self.variant}/seed{self.seed}"


@attrs.frozen
class LoadedSuite:
    """A validated suite: its file, its spec and its expanded jobs (variant-major order)."""

    path: Path
    spec: Suite
    jobs: tuple[Job, ...]

    @property
    def reference(self) -> str:
        """The variant the others are compared to (default: the first)."""
        return self.spec.reference or next(iter(self.spec.variants))


def read_suite(path: Path) -> Suite:
    """Parse and check a suite file; errors name the file and the key path."""
    try:
        spec = structure(Suite, read_yaml(path))
    except ConfigError as err:
        raise err.with_source(str(path)) from None
    if not spec.variants:
        raise ConfigError("variants", "a suite needs at least one variant", str(path))
    for name, variant in spec.variants.items():
        if not _NAME.match(name):
            raise ConfigError(f"variants.{name}", "a variant name must be a folder name "
                              "(letters, digits, '_', '-', '.')", str(path))
        if variant.recipe is None and spec.base is None:
            raise ConfigError(f"variants.{name}", "no recipe: set the suite's `base:` or the "
                              "variant's `recipe:`", str(path))
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError("seeds", f"expected a non-empty list of distinct seeds, got {list(spec.seeds)}",
                          str(path))
    if spec.reference is not None and spec.reference not in spec.variants:
        raise ConfigError("reference", f"{spec.reference!r} is not a variant; valid: "
                          f"{', '.join(spec.variants)}", str(path))
    return spec


def variant_data(spec: Suite, name: str, folder: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """The merged (unvalidated) recipe mapping of variant ``name`` without its seed."""
    variant = spec.variants[name]
    recipe_path = folder / (variant.recipe or spec.base)
    if not recipe_path.is_file():
        raise ConfigError("", f"recipe {str(recipe_path)!r} not found")
    data = merge(merge(resolve_extends(recipe_path), spec.overrides), variant.patch)
    for text in overrides:
        data = merge(data, parse_override(text))
    return data


def load_suite(path: str | Path, overrides: list[str] = ()) -> LoadedSuite:
    """Read a suite and resolve every variant × seed into a validated recipe (plugin configs
    included), so that a bad variant fails before anything trains, naming the file and variant."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", "suite file not found", str(path))
    spec = read_suite(path)
    jobs = []
    for name in spec.variants:
        try:
            data = variant_data(spec, name, path.parent, overrides)
            recipes = [build_recipe(merge(data, {"seed": seed}), "") for seed in spec.seeds]
            check_recipe(recipes[0])
        except UserError as err:
            raise ConfigError(f"variants.{name}", str(err), str(path)) from None
        jobs += [Job(name, seed, recipe) for seed, recipe in zip(spec.seeds, recipes)]
    return LoadedSuite(path, spec, tuple(jobs))
