"""Turn plain YAML data into attrs config objects, with errors that name the key path.

A small structurer instead of a dependency: recipe and plugin configs are attrs classes whose
fields are annotated with int, float, str, bool, ``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``dict[str, X]``, ``Literal[...]`` or another attrs class.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

import attrs

from ssseg.errors import UserError


class ConfigError(UserError, ValueError):
    """A user error in a recipe or plugin config; ``str()`` names the source and key path."""

    def __init__(self, path: str, message: str, source: str | None = None):
        self.path, self.message, self.source = path, message, source
        where = f"{source}: " if source else ""
        key = f"{path}: " if path else ""
        super().__init__(f"{where}{key}{message}")

    def with_source(self, source: str) -> "ConfigError":
        """The same error, naming the file it came from."""
        return ConfigError(self.path, self.message, self.source or source)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def structure(cls: type, data: Any, path: str = "") -> Any:
    """Build ``cls`` (an attrs class) from a mapping; unknown keys, wrong types and failed
    validators raise :class:`ConfigError` naming ``path``."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {_type_name(data)}")
    fields = {f.name: f for f in attrs.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            _join(path, unknown[0]), f"unknown key; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _convert(hints[k], v, _join(path, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        field = getattr(err, "ssseg_field", None)
        raise ConfigError(_join(path, field) if field else path, str(err)) from None


def unstructure(obj: Any) -> Any:
    """The inverse of :func:`structure`: plain dicts, lists and scalars (YAML-safe)."""
    if attrs.has(type(obj)):
        return {f.name: unstructure(getattr(obj, f.name)) for f in attrs.fields(type(obj))}
    if isinstance(obj, dict):
        return {k: unstructure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [unstructure(v) for v in obj]
    return obj


def _type_name(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path)
            except ConfigError as err:
                errors.append(err.message)
        raise ConfigError(path, " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        if value not in args:
            raise ConfigError(path, f"{value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if attrs.has(tp):
        return structure(tp, value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {_type_name(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(path, f"expected a list of {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {_type_name(value)}")
        return {k: _convert(args[1], v, _join(path, k)) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {_type_name(value)} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {_type_name(value)} {value!r}")
        return value
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # split: 92 and -o data.split=92 mean the string "92"
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(path, f"expected {'a string' if tp is str else 'true or false'}, "
                                    f"got {_type_name(value)} {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")
