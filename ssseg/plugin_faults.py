"""Reporting a bug in a plugin: its name, where it failed (importing it, constructing it, which
hook, saving or restoring its state) and only its own traceback frames, not ssseg's or torch's."""

from __future__ import annotations

import importlib.util
import os
import traceback

from ssseg.errors import PluginError


def plugin_failure(plugin: str, place: str, err: BaseException, module: str, hint: str = "") -> PluginError:
    """The :class:`PluginError` for ``err``, raised by plugin ``plugin`` ``place`` (for example
    "in hook 'plan_views'"), with ``hint`` after the error; the frames shown are those in the
    files of ``module``'s package."""
    roots = source_roots(module)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if roots and f.filename.startswith(roots)]
    lines = traceback.format_list(frames)
    if isinstance(err, SyntaxError):  # no frame of its own: the file, line and caret
        lines += traceback.format_exception_only(err)[:-1]
    detail = "".join(lines).rstrip("\n")
    return PluginError(f"plugin {plugin!r} failed {place}: {type(err).__name__}: {err}{hint}"
                       + (f"\n{detail}" if detail else ""))


def source_roots(module: str) -> tuple[str, ...]:
    """Path prefixes of the source files of ``module``'s top-level package (or of the module's
    own file), found without importing it."""
    try:
        spec = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return ()
    if spec is None:
        return ()
    if spec.submodule_search_locations:
        return tuple(os.path.join(folder, "") for folder in spec.submodule_search_locations)
    return (spec.origin,) if spec.origin else ()
