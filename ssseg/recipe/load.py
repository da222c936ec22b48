"""Reading recipes: YAML files, ``extends:`` parents, ``-o key.path=value`` overrides."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import attrs
import yaml

from ssseg.recipe.schema import Recipe
from ssseg.recipe.structure import ConfigError, structure, unstructure


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, except that ``1e-3`` is a number (1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Parse YAML text safely, reading exponent numbers without a dot (``1e-3``) as floats."""
    return yaml.load(text, Loader=_Loader)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; syntax errors name the file and line."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError("", f"cannot read recipe: {err.strerror}", str(path)) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError("", f"{line}invalid YAML: {getattr(err, 'problem', err)}", str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"a recipe must be a mapping, got {type(data).__name__}", str(path))
    return data


def merge(base: dict[str, Any], patch: dict[str, Any], _path: str = "") -> dict[str, Any]:
    """``patch`` over ``base``: mappings merge recursively, lists and scalars replace, and
    ``plugins.<key>: null`` removes an inherited plugin (a new one given as null means no params)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if _path == "plugins" and value is None:
            if key in out:
                del out[key]
            else:
                out[key] = {}
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, f"{_path}.{key}" if _path else key)
        elif key == "plugins" and not _path and isinstance(value, dict):
            out[key] = merge({}, value, "plugins")
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_extends(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of ``path`` with its ``extends:`` chain merged in (parent first)."""
    path = path.resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError("extends", f"circular extends: {chain}", str(_seen[0]))
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError("extends", f"expected a file path, got {parent!r}", str(path))
    parent_path = (path.parent / parent)
    if not parent_path.is_file():
        raise ConfigError("extends", f"parent recipe {parent!r} not found (looked at {parent_path})",
                          str(path))
    return merge(resolve_extends(parent_path, (*_seen, path)), data)


def parse_override(text: str) -> dict[str, Any]:
    """``"a.b.c=value"`` -> ``{"a": {"b": {"c": value}}}`` with value parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("", f"override {text!r} is not of the form key.path=value "
                              "(for example optim.iters=50)", "-o")
    try:
        value = load_yaml(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return nest(key, value)


def nest(key: str, value: Any) -> dict[str, Any]:
    """``("a.b.c", value)`` -> ``{"a": {"b": {"c": value}}}``: a recipe patch setting one key."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def build_recipe(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a merged mapping into a :class:`Recipe` that remembers ``source``; errors name
    ``source`` and the key path of every wrong key."""
    try:
        recipe = structure(Recipe, merge({}, data))
    except ConfigError as err:
        raise err.with_source(source) from None
    return attrs.evolve(recipe, source=source or None)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, merge, override and validate the recipe at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", "recipe file not found", str(path))
    data = merge({}, resolve_extends(path))
    for text in overrides:
        data = merge(data, parse_override(text))
    return build_recipe(data, str(path))


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (what each run saves beside its results)."""
    return yaml.safe_dump(unstructure(recipe), sort_keys=False)
