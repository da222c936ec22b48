"""Suite files: the schema, and their expansion into one resolved recipe per variant, axis value
and seed.

A run's recipe is built in this order, each step merged over the last with
:func:`ssseg.recipe.load.merge`: the variant's ``recipe`` (or the suite's ``base``, with its
``extends:`` chain) → the suite's ``overrides`` → the variant's ``patch`` → the command line's
``-o`` overrides → the axis value (``axis.key: value``) → ``seed: k``. The suite owns the axis and
the seeds: ``-o`` may not set them (``--seeds`` replaces the seeds).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

from ssseg.errors import UserError
from ssseg.plugin_manager import check_recipe
from ssseg.recipe.load import build_recipe, merge, nest, parse_override, read_yaml, resolve_extends
from ssseg.recipe.schema import Recipe
from ssseg.recipe.structure import ConfigError, structure
from ssseg.recipe.validators import in_range
from ssseg.suite.folder import run_name

# sbatch options the SLURM launcher sets itself (submitit's logs, its requeue signal, the array)
MANAGED_SBATCH = ("array", "error", "open_mode", "output", "signal")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@attrs.frozen
class Variant:
    """One row of the comparison: a recipe (default: the suite's ``base``) and a patch over it."""

    recipe: str | None = None
    patch: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Axis:
    """A second axis crossed with the variants and seeds (the columns of a paper's table): the
    recipe key ``key`` (dotted, e.g. ``data.split``) takes each of ``values`` in turn; ``label``
    names it in the report (default: the key)."""

    key: str = ""
    values: tuple[Any, ...] = ()
    label: str | None = None

    @property
    def title(self) -> str:
        """The axis's name in the report."""
        return self.label or self.key


@attrs.frozen
class SlurmOptions:
    """The ``launcher:`` section: how ``ssseg suite run --launcher slurm`` submits each run (one
    SLURM job per run; the command line's flags override these)."""

    partition: str | None = None
    account: str | None = None
    gpus_per_run: int = attrs.field(default=1, validator=in_range(0))
    cpus_per_run: int | None = attrs.field(default=None, validator=in_range(1))
    nodes_per_run: int = attrs.field(default=1, validator=in_range(1))
    time_min: int = attrs.field(default=1440, validator=in_range(1))
    sbatch: dict[str, str | bool] = attrs.field(factory=dict)
    setup: tuple[str, ...] = ()

    @sbatch.validator
    def _not_managed(self, attribute: Any, value: dict[str, str | bool]) -> None:
        for key in value:
            if key.replace("-", "_") in MANAGED_SBATCH:
                err = ValueError(f"{key!r} is set by the launcher; it cannot be an extra sbatch option "
                                 f"(managed: {', '.join(MANAGED_SBATCH)})")
                err.ssseg_field = f"sbatch.{key}"
                raise err


@attrs.frozen
class Suite:
    """A suite file: variants × (axis values) × seeds, compared to the ``reference`` variant."""

    variants: dict[str, Variant] = attrs.field(factory=dict)
    base: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    overrides: dict[str, Any] = attrs.field(factory=dict)
    reference: str | None = None
    axis: Axis | None = None
    launcher: SlurmOptions = attrs.field(factory=SlurmOptions)

    def points(self) -> tuple[str | None, ...]:
        """The axis values as folder names (``(None,)`` for a suite without an axis)."""
        return tuple(str(v) for v in self.axis.values) if self.axis else (None,)


@attrs.frozen
class Job:
    """One training run of a suite: ``<out>/<variant>/[<axis value>/]seed<seed>/``."""

    variant: str
    seed: int
    recipe: Recipe
    point: str | None = None

    @property
    def name(self) -> str:
        """The run's folder relative to the suite's output folder."""
        return run_name(self.variant, self.point, self.seed)


def is_supervised_only(recipe: Recipe) -> bool:
    """Whether ``recipe`` trains on labeled data only (no unlabeled batch): a candidate for the
    suite's reference row, which the suite may also name itself (``reference:``). Decided by the
    recipe, not by which plugins it names."""
    return recipe.data.batch_unlabeled == 0


@attrs.frozen
class LoadedSuite:
    """A validated suite: its file, its spec and its expanded jobs (variant-major order)."""

    path: Path
    spec: Suite
    jobs: tuple[Job, ...]

    @property
    def supervised_variants(self) -> tuple[str, ...]:
        """The variants that train on labeled data only (candidates for the reference)."""
        first = {job.variant: job.recipe for job in reversed(self.jobs)}
        return tuple(v for v in self.spec.variants if is_supervised_only(first[v]))


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
    if spec.axis is not None:
        _check_axis(spec.axis, str(path))
    return spec


def _check_axis(axis: Axis, source: str) -> None:
    if not axis.key or any(not part for part in axis.key.split(".")) or axis.key.split(".")[0] == "seed":
        raise ConfigError("axis.key", f"expected a dotted recipe key such as data.split (not seed: "
                          f"the suite owns the seeds), got {axis.key!r}", source)
    if not axis.values:
        raise ConfigError("axis.values", "expected a non-empty list of values", source)
    names = [str(v) for v in axis.values]
    for i, (value, name) in enumerate(zip(axis.values, names)):
        if isinstance(value, (dict, list)) or value is None or not _NAME.match(name):
            raise ConfigError(f"axis.values[{i}]", f"{value!r}: an axis value must be a number or a "
                              "string that is a folder name (letters, digits, '_', '-', '.')", source)
    if len(set(names)) != len(names):
        raise ConfigError("axis.values", f"expected distinct values, got {names}", source)


def run_patch(spec: Suite, point_index: int | None, seed: int) -> dict[str, Any]:
    """What the suite sets last in a run's recipe: the axis value (if any) and the seed."""
    patch = nest(spec.axis.key, spec.axis.values[point_index]) if spec.axis else {}
    return merge(patch, {"seed": seed})


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


def _holds_key(data: dict[str, Any], key: str) -> bool:
    """Whether the nested mapping ``data`` holds the dotted ``key``."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def refuse_suite_keys(spec: Suite, path: Path, overrides: list[str]) -> None:
    """A :class:`UserError` for an ``-o`` that sets what the suite sets in every run: the seed
    or the axis key (it would be overwritten, silently)."""
    for text in overrides:
        data = parse_override(text)
        if "seed" in data:
            raise UserError(f"-o {text}: the suite sets seed in every run (seeds {', '.join(map(str, spec.seeds))} "
                            f"in {path}); choose the seeds with --seeds, e.g. --seeds 0 or --seeds 0,1")
        if spec.axis is not None and _holds_key(data, spec.axis.key):
            raise UserError(f"-o {text}: the suite's axis sets {spec.axis.key} in every run (values "
                            f"{', '.join(spec.points())} in {path}); change axis.values in the suite file")


def with_seeds(spec: Suite, seeds: list[int], path: Path) -> Suite:
    """``spec`` with its seeds replaced by ``--seeds`` (non-empty, distinct)."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {','.join(map(str, seeds))}: expected distinct seeds, e.g. --seeds 0 or "
                        f"--seeds 0,1 (the suite {path} has {', '.join(map(str, spec.seeds))})")
    return attrs.evolve(spec, seeds=tuple(seeds))


def load_suite(path: str | Path, overrides: list[str] = (), seeds: list[int] | None = None) -> LoadedSuite:
    """Read a suite and resolve every variant × axis value × seed into a validated recipe (plugin
    configs included), so that a bad variant fails before anything trains, naming the file and
    variant. ``overrides`` (``-o``) apply to every run but may not set the seed or the axis key;
    ``seeds`` replace the suite's."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", "suite file not found", str(path))
    spec = read_suite(path)
    if seeds is not None:
        spec = with_seeds(spec, seeds, path)
    refuse_suite_keys(spec, path, overrides)
    grid = [(p, i if spec.axis else None, seed) for i, p in enumerate(spec.points()) for seed in spec.seeds]
    jobs = []
    for name in spec.variants:
        try:
            data = variant_data(spec, name, path.parent, overrides)
            recipes = [build_recipe(merge(data, run_patch(spec, i, seed)), "") for _, i, seed in grid]
            for recipe in recipes[::len(spec.seeds)]:  # one per axis value: an axis may set plugin keys
                check_recipe(recipe)
        except UserError as err:
            raise ConfigError(f"variants.{name}", str(err), str(path)) from None
        jobs += [Job(name, seed, recipe, point) for (point, _, seed), recipe in zip(grid, recipes)]
    return LoadedSuite(path, spec, tuple(jobs))
