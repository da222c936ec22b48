"""The pluggy hook specs, generated from the step table (:mod:`ssseg.step_table`): one spec per
declared hook, with its arguments, its kind (a decision is ``firstresult``) and its docs.
docs/hooks.md is generated from the same table (``python -m ssseg.hookdoc``)."""

from __future__ import annotations

import types

import pluggy

from ssseg.step_table import HOOKS, HOOKSPEC_VERSION, Hook

PROJECT = "ssseg"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
HOOK_KINDS: dict[str, str] = {name: hook.kind for name, hook in HOOKS.items()}


def _spec(hook: Hook):
    """The spec function of ``hook``: a function taking exactly the hook's arguments (pluggy reads
    them from its code object), with the hook's name and doc."""
    def spec():
        """Replaced below."""

    names = hook.arg_names
    spec.__code__ = spec.__code__.replace(co_name=hook.name, co_argcount=len(names), co_nlocals=len(names),
                                          co_varnames=names)
    spec.__name__ = spec.__qualname__ = hook.name
    spec.__doc__ = f"**{hook.kind}**. {hook.doc}"
    return hookspec(firstresult=hook.kind == "decision")(spec)


SPECS = types.SimpleNamespace(**{name: _spec(hook) for name, hook in HOOKS.items()})

__all__ = ["HOOKSPEC_VERSION", "HOOK_KINDS", "PROJECT", "SPECS", "hookimpl", "hookspec"]
