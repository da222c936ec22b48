"""Turn plain YAML data into attrs config objects, with errors that name the key path.

A small structurer instead of a dependency: recipe and plugin configs are attrs classes whose
fields are annotated with int, float, str, bool, ``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``dict[str, X]``, ``Literal[...]`` or another attrs class.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Iterable, Literal, Union

import attrs

from ssseg.errors import UserError


class ConfigError(UserError, ValueError):
    """A user error in a recipe or plugin config; ``str()`` names the source and key path."""

    def __init__(self, path: str, message: str, source: str | None = None):
        self.path, self.message, self.source = path, message, source
        super().__init__(_located(source, path, message))

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        """The single errors this one reports: itself."""
        return (self,)

    def with_source(self, source: str) -> ConfigError:
        """The same error, naming the file it came from."""
        return ConfigError(self.path, self.message, self.source or source)


class ConfigErrors(ConfigError):
    """Several errors of one config, reported at once, one line each (a :class:`ConfigError`
    whose ``path`` and ``message`` are the first one's)."""

    def __init__(self, errors: list[ConfigError]):
        self._errors = tuple(errors)
        first = self._errors[0]
        self.path, self.message, self.source = first.path, first.message, first.source
        sources = {e.source for e in self._errors}
        where = f" in {first.source}" if len(sources) == 1 and first.source else ""
        lines = "".join(f"\n  {e}" for e in self._errors)
        UserError.__init__(self, f"{len(self._errors)} errors{where}:{lines}")

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        """The single errors, in the order they were found."""
        return self._errors

    def with_source(self, source: str) -> ConfigError:
        """The same errors, each naming the file it came from."""
        return combine([e.with_source(source) for e in self._errors])


def combine(errors: list[ConfigError]) -> ConfigError:
    """One error reporting every single error of ``errors`` (the error itself if it is alone)."""
    single = [e for err in errors for e in err.errors]
    return single[0] if len(single) == 1 else ConfigErrors(single)


def _located(source: str | None, path: str, message: str) -> str:
    return "".join((f"{source}: " if source else "", f"{path}: " if path else "", message))


# attrs field metadata: a field no config file sets (``Recipe.source``); structure() refuses it
# as a key and unstructure() leaves it out
NOT_A_KEY = "ssseg_not_a_key"


def config_fields(cls: type) -> dict[str, attrs.Attribute]:
    """The fields of attrs class ``cls`` that a config file may set, by name."""
    return {f.name: f for f in attrs.fields(cls) if not f.metadata.get(NOT_A_KEY)}


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def structure(cls: type, data: Any, path: str = "") -> Any:
    """Build ``cls`` (an attrs class) from a mapping. Unknown keys, wrong types and failed
    validators raise :class:`ConfigError` naming ``path``; all of them at once
    (:class:`ConfigErrors`) when there are several."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {_type_name(data)}")
    fields = config_fields(cls)
    hints = typing.get_type_hints(cls)
    valid = (f"valid keys: {', '.join(sorted(fields))}" if fields
             else f"{path or 'it'} takes no options")
    errors = [ConfigError(_join(path, key), f"unknown key; {valid}") for key in data if key not in fields]
    kwargs, wrong = _convert_items((key, hints[key], value, _join(path, key))
                                   for key, value in data.items() if key in fields)
    errors += wrong + _refusals(cls, kwargs, path)
    if errors:
        raise combine(errors)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:  # __attrs_post_init__, or a field without a default
        field = getattr(err, "ssseg_field", None)
        raise ConfigError(_join(path, field) if field else path, str(err)) from None


def _refusals(cls: type, kwargs: dict[str, Any], path: str) -> list[ConfigError]:
    """What every field validator of ``cls`` says about ``kwargs`` (attrs stops at the first)."""
    try:
        with attrs.validators.disabled():
            draft = cls(**kwargs)
    except (ValueError, TypeError):
        return []  # structure() reports it when it builds cls
    errors = []
    for field in attrs.fields(cls):
        if field.validator is None:
            continue
        try:
            field.validator(draft, field, getattr(draft, field.name))
        except ConfigError as err:
            errors.append(err)
        except (ValueError, TypeError) as err:
            errors.append(ConfigError(_join(path, getattr(err, "ssseg_field", field.name)), str(err)))
    return errors


def _convert_items(items: Iterable[tuple[Any, Any, Any, str]]) -> tuple[dict[Any, Any], list[ConfigError]]:
    """``{key: _convert(tp, value, path)}`` for each ``(key, tp, value, path)`` that converts,
    and the errors of those that do not."""
    out, errors = {}, []
    for key, tp, value, path in items:
        try:
            out[key] = _convert(tp, value, path)
        except ConfigError as err:
            errors.append(err)
    return out, errors


def _convert_all(items: Iterable[tuple[Any, Any, Any, str]]) -> dict[Any, Any]:
    """:func:`_convert_items`, raising one error for all that do not convert."""
    out, errors = _convert_items(items)
    if errors:
        raise combine(errors)
    return out


def unstructure(obj: Any) -> Any:
    """The inverse of :func:`structure`: plain dicts, lists and scalars (YAML-safe)."""
    if attrs.has(type(obj)):
        return {name: unstructure(getattr(obj, name)) for name in config_fields(type(obj))}
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
                errors += [e.message for e in err.errors]
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
            args = (args[0],) * len(value)
        elif len(value) != len(args):
            raise ConfigError(path, f"expected a list of {len(args)} items, got {len(value)}")
        items = _convert_all((i, a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        return tuple(items.values())
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {_type_name(value)}")
        return _convert_all((k, args[1], v, _join(path, k)) for k, v in value.items())
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
