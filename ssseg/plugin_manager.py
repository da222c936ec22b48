"""Finding plugins (entry points, ``use: "module:Class"``) and registering a recipe's plugins
with the hook kinds enforced."""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import os
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Iterable

import attrs
import pluggy
import torch

from ssseg import hookspecs, step_table
from ssseg.compat import hookspec_problem, implemented_hooks, removed_attribute_hint, renamed_argument_hint
from ssseg.errors import PluginError, UserError
from ssseg.plugin_faults import plugin_failure
from ssseg.recipe.structure import ConfigError, combine, structure

ENTRY_POINT_GROUP = "ssseg.plugins"
AUTOLOAD_ENV = "SSSEG_DISABLE_PLUGIN_AUTOLOAD"
FIRST_PARTY_DIST = "ssseg"
ORDERING_OPTIONS = ("tryfirst", "trylast", "wrapper", "hookwrapper")


@attrs.frozen
class PluginSource:
    """Where a plugin name comes from: its entry point and distribution."""

    name: str
    entry_point: EntryPoint
    distribution: str

    def load(self) -> type:
        """Import the plugin class (only now: discovery is lazy); a failing import is a
        :class:`PluginError` naming the plugin."""
        try:
            return self.entry_point.load()
        except Exception as err:  # noqa: BLE001 - any error while importing is the plugin's
            raise plugin_failure(self.name, f"while importing {self.entry_point.module!r}", err,
                                 self.entry_point.module) from err


def discover() -> dict[str, PluginSource]:
    """Plugins registered under the ``ssseg.plugins`` entry-point group, by name, not imported.

    With ``SSSEG_DISABLE_PLUGIN_AUTOLOAD`` set, only ssseg's own plugins are listed. A name
    registered by two distributions is an error naming both.
    """
    only_first_party = bool(os.environ.get(AUTOLOAD_ENV))
    found: dict[str, PluginSource] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        if only_first_party and dist != FIRST_PARTY_DIST:
            continue
        if ep.name in found and found[ep.name].distribution != dist:
            raise PluginError(
                f"plugin name {ep.name!r} is registered by two distributions: "
                f"{found[ep.name].distribution} ({found[ep.name].entry_point.value}) and "
                f"{dist} ({ep.value}); uninstall one or refer to one with use: \"module:Class\""
            )
        found[ep.name] = PluginSource(ep.name, ep, dist)
    return found


def load_plugin_class(key: str, params: dict[str, Any]) -> type:
    """The plugin class for recipe entry ``plugins.<key>``: ``params["use"]`` ("module:Class")
    if given, else the entry point named ``key``."""
    use = params.get("use")
    if use is not None:
        return _import_object(use, key)
    sources = discover()
    if key not in sources:
        close = difflib.get_close_matches(key, list(sources), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise PluginError(
            f"plugins.{key}: unknown plugin {key!r}{hint} Installed: {', '.join(sorted(sources))}. "
            "A local plugin needs use: \"module:Class\"."
        )
    return sources[key].load()


def _import_object(spec: str, key: str) -> type:
    where = f"plugins.{key}.use"
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PluginError(f"{where}: {spec!r} is not of the form \"module:Class\"")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise PluginError(f"{where}: cannot import module {module_name!r}: {err}") from None
    except Exception as err:  # noqa: BLE001 - any other error while importing is the plugin's
        raise plugin_failure(key, f"while importing {module_name!r}", err, module_name) from err
    try:
        return functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        raise PluginError(f"{where}: module {module_name!r} has no attribute {attr!r}") from None


def instantiate(key: str, params: dict[str, Any]) -> Any:
    """Build the plugin of ``plugins.<key>`` from its params (validated against its Config)."""
    cls = load_plugin_class(key, params)
    problem = hookspec_problem(cls)
    if problem:
        raise PluginError(f"plugins.{key}: {problem}")
    config_cls = getattr(cls, "Config", None)
    if config_cls is None or not attrs.has(config_cls):
        raise PluginError(f"plugins.{key}: {cls.__module__}.{cls.__qualname__} has no attrs Config class")
    options = {k: v for k, v in params.items() if k != "use"}
    config = structure(config_cls, options, f"plugins.{key}")
    try:
        return cls(config)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a bug in the plugin's constructor
        raise plugin_failure(key, "in its constructor", err, cls.__module__) from err


class PluginSet:
    """A recipe's plugins, registered: the plugins by recipe key, and their hooks called as the
    step table says (answers checked, combined by each hook's rule). The core holds it; plugins
    never see it."""

    def __init__(self, plugins: dict[str, Any], pm: pluggy.PluginManager):
        self.plugins = plugins
        self._pm = pm
        self.pseudo_label_source = "teacher"  # the recipe's decision, taken by check_recipe
        self._watchers: list[Any] = []

    def __getitem__(self, key: str) -> Any:
        return self.plugins[key]

    def call(self, hook: str, default: Any = None, **kwargs: Any) -> Any:
        """Call ``hook`` with ``kwargs`` and combine the answers by its rule; a decision that no
        plugin takes gives ``default``."""
        answers = getattr(self._pm.hook, hook)(**kwargs)
        for watcher in self._watchers:
            watcher(hook, answers, kwargs)
        combined = step_table.HOOKS[hook].combine.apply(hook, answers, kwargs)
        return default if combined is None else combined

    def answering(self, hook: str) -> list[str]:
        """The plugins (recipe keys) that implement ``hook``, in call order."""
        return [plugin_name(i.plugin) for i in reversed(getattr(self._pm.hook, hook).get_hookimpls())]

    def implements(self, key: str) -> list[str]:
        """The hooks the plugin of recipe key ``key`` implements."""
        return [c.name for c in self._pm.get_hookcallers(self._pm.get_plugin(key)) or []]

    def watch(self, watcher: Any) -> None:
        """Call ``watcher(hook, answers, kwargs)`` after every hook call with the answers before
        they are combined (a decision's one answer, a list for the others): the contract kit's
        view of a step."""
        self._watchers.append(watcher)

    def table(self) -> list[tuple[str, str, str, list[str]]]:
        """(phase, hook, kind, answering plugins in call order) for every hook, in step order."""
        return [(step_table.PHASE_OF[name], name, hook.kind, self.answering(name))
                for name, hook in step_table.HOOKS.items()]


def check_recipe(recipe: Any) -> PluginSet:
    """Build and register the plugins of a schema-valid recipe and run the ``validate`` phase:
    the one check beyond the schema that ``train``, ``eval``, ``predict``, ``explain``, suites
    (every variant, at load) and the contract kit all make. Refused, naming the plugin: an unknown
    plugin or one whose hook spec version does not fit, Configs that refuse their params (every
    wrong key of every plugin, named with the recipe's file), a hook that matches no spec or asks
    pluggy for an order, two plugins answering one decision hook, a hook a plugin ``requires``
    that no other plugin answers, a hook this recipe never calls (no unlabeled batch, no
    pseudo-labels, no views: :data:`ssseg.step_table.NEVER_CALLED`), a decision whose answer no
    plugin reads, and a ``validate`` refusal. Each message names the plugin and the hook and says
    what to do instead."""
    plugins, errors = {}, []
    for key, params in recipe.plugins.items():
        try:
            plugin = instantiate(key, params)
        except ConfigError as err:  # named like the recipe's own errors: file, then key path
            errors.append(err.with_source(recipe.source))
            continue
        plugin.recipe_key = key
        plugins[key] = plugin
    if errors:
        raise combine(errors)
    pm = register_plugins(plugins.values())
    _check_requirements(pm, list(plugins.values()))
    registered = PluginSet(plugins, pm)
    source = registered.call("pseudo_label_source", default="teacher", recipe=recipe)
    registered.pseudo_label_source = source
    _check_never_called(registered, recipe)
    _check_answers_read(pm)
    try:
        registered.call("validate", recipe=recipe, pseudo_label_source=source)
    except UserError as err:
        decider = registered.answering("pseudo_label_source")
        if decider and "pseudo-label source" in str(err):
            raise type(err)(f"{err} (the pseudo-label source {source!r} is decided by {decider[0]})") from None
        raise
    return registered


def _check_never_called(registered: PluginSet, recipe: Any) -> None:
    """Refuse a plugin implementing a hook this recipe never calls (or whose answer it never
    uses), naming why and what to do."""
    decider = registered.answering("pseudo_label_source")
    holds = {"no_unlabeled": not recipe.data.batch_unlabeled,
             "source_none": registered.pseudo_label_source == "none",
             "no_views": not (registered.answering("plan_views") or registered.answering("refine_views"))}
    instead = {"no_unlabeled": "set data.batch_unlabeled",
               "source_none": f"remove {decider[0] if decider else 'the plugin'} (it decides the source 'none')",
               "no_views": "add a strategy that plans views"}
    for hook_name, hook in step_table.HOOKS.items():
        for key in registered.answering(hook_name):
            for condition in hook.never_called:
                if holds[condition]:
                    reason = step_table.NEVER_CALLED[condition]
                    if condition == "source_none" and decider:
                        reason += f", decided by {decider[0]}"
                    raise PluginError(f"plugins.{key}: answers {hook_name}, which this recipe never calls: "
                                      f"{reason}. Remove {key}, or {instead[condition]}")


def _check_answers_read(pm: pluggy.PluginManager) -> None:
    """Refuse a plugin answering a decision whose answer reaches later hooks only as an argument
    (``answer_arg``) that no plugin's hook takes."""
    for hook_name, hook in step_table.HOOKS.items():
        if hook.answer_arg is None:
            continue
        answering = getattr(pm.hook, hook_name).get_hookimpls()
        readers = [k for k, takes in pm.takes.items() if hook.answer_arg in takes and k[0] != hook_name]
        if answering and not readers:
            key = plugin_name(answering[0].plugin)
            raise PluginError(f"plugins.{key}: answers {hook_name}, but no plugin of the recipe reads "
                              f"{hook.answer_arg!r} (no hook implementation takes that argument), so its answer "
                              f"would change nothing. Add a plugin that uses {hook.answer_arg}, or remove {key}")


def plugin_name(plugin: Any) -> str:
    """The name a plugin is known by in messages."""
    return getattr(plugin, "recipe_key", None) or getattr(plugin, "name", None) or type(plugin).__name__


class _Manager(pluggy.PluginManager):
    """pluggy's manager, registering a plugin's decision hooks only where it takes part: a plugin
    whose ``decides`` (from its config) leaves out a decision hook it implements is not asked it,
    so it composes with another plugin that takes that decision. ``takes``: the arguments each
    (hook, plugin) implementation takes."""

    def __init__(self, project_name: str):
        super().__init__(project_name)
        self.takes: dict[tuple[str, str], tuple[str, ...]] = {}

    def parse_hookimpl_opts(self, plugin: Any, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is not None and hookspecs.HOOK_KINDS.get(name) == "decision" and name not in decisions_of(plugin):
            return None
        return opts


def decisions_of(plugin: Any) -> set[str]:
    """The decision hooks ``plugin`` takes part in: its ``decides`` (an attribute or property,
    from its config), by default every decision hook it implements."""
    implemented = {h for h in implemented_hooks(type(plugin)) if hookspecs.HOOK_KINDS.get(h) == "decision"}
    declared = getattr(plugin, "decides", None)
    if declared is None:
        return implemented
    unknown = sorted(set(declared) - implemented)
    if unknown:
        raise PluginError(f"plugin {plugin_name(plugin)!r} decides {unknown}, which are not decision hooks it "
                          f"implements ({', '.join(sorted(implemented)) or 'none'})")
    return set(declared)


def new_manager() -> pluggy.PluginManager:
    """A plugin manager with ssseg's hook specs."""
    pm = _Manager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs.SPECS)
    return pm


def register_plugins(plugins: Iterable[Any]) -> pluggy.PluginManager:
    """Register plugins (in recipe order) and enforce the hook rules.

    Observers run in recipe order (pluggy calls the last registered first, so plugins are
    registered in reverse). Errors: a hook implementation that matches no spec, arguments the
    spec does not have, an ordering option (``tryfirst``, ``trylast``, ``wrapper``,
    ``hookwrapper``: order comes from the recipe and the hook kinds), two providers of a decision
    hook. An exception inside a hook is re-raised as
    :class:`PluginError` naming the plugin and the hook.
    """
    plugins = list(plugins)
    pm = new_manager()
    for plugin in reversed(plugins):
        name = plugin_name(plugin)
        try:
            pm.register(plugin, name=name)
        except pluggy.PluginValidationError as err:
            detail = " ".join(str(err).split("\n", 1)[-1].split())
            raise PluginError(f"plugin {name!r}: {detail}{renamed_argument_hint(plugin)}") from None
        except ValueError as err:
            raise PluginError(f"plugin {name!r} appears twice in the recipe: {err}") from None
    _check_unknown_hooks(pm)
    _check_ordering_options(pm)
    _check_decisions(pm)
    _guard_hooks(pm)
    return pm

def _check_unknown_hooks(pm: pluggy.PluginManager) -> None:
    for hook_name in pm.hook.__dict__:
        caller = getattr(pm.hook, hook_name)
        if isinstance(caller, pluggy.HookCaller) and not caller.has_spec():
            names = [plugin_name(impl.plugin) for impl in caller.get_hookimpls()]
            close = difflib.get_close_matches(hook_name, list(hookspecs.HOOK_KINDS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PluginError(
                f"plugin {names[0]!r} implements {hook_name!r}, which is no ssseg hook{hint}; "
                f"hooks: {', '.join(hookspecs.HOOK_KINDS)}"
            )


def _check_ordering_options(pm: pluggy.PluginManager) -> None:
    for hook_name in hookspecs.HOOK_KINDS:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            options = [o for o in ORDERING_OPTIONS if getattr(impl, o, False)]
            if options:
                raise PluginError(
                    f"plugin {plugin_name(impl.plugin)!r} marks hook {hook_name!r} with "
                    f"{', '.join(options)}; ssseg orders hooks itself (observers in recipe order, "
                    "decisions by one plugin, contributions combined by a commutative rule), so use "
                    "a plain @hookimpl")


def _check_requirements(pm: pluggy.PluginManager, plugins: list[Any]) -> None:
    for plugin in plugins:
        for hook, suggestion in dict(getattr(plugin, "requires", None) or {}).items():
            if hook not in hookspecs.HOOK_KINDS:
                raise PluginError(f"plugin {plugin_name(plugin)!r} requires {hook!r}, which is no ssseg "
                                  f"hook; hooks: {', '.join(hookspecs.HOOK_KINDS)}")
            others = [i for i in getattr(pm.hook, hook).get_hookimpls() if i.plugin is not plugin]
            if not others:
                snippet = suggestion if ":" in suggestion else f"{suggestion}: {{}}"
                hint = f"add `{snippet}` to the recipe's plugins, or another plugin answering {hook}" \
                    if suggestion else f"add a plugin answering {hook}"
                raise PluginError(f"plugins.{plugin_name(plugin)}: needs a plugin that answers "
                                  f"{hook!r}, and none in this recipe does; {hint}")


# decision hook -> how a plugin changes another's answer instead of restating it
_REFINE_HINT = {
    "plan_views": " (a plugin that only adjusts another's views implements refine_views)",
    "schedule_augmentation": " (a plugin that only adjusts another's augmentation implements refine_augmentation)",
}


def _check_decisions(pm: pluggy.PluginManager) -> None:
    for hook_name, kind in hookspecs.HOOK_KINDS.items():
        impls = getattr(pm.hook, hook_name).get_hookimpls()
        if kind == "decision" and len(impls) > 1:
            names = sorted(plugin_name(i.plugin) for i in impls)
            raise PluginError(
                f"plugins {' and '.join(map(repr, names))} both answer the decision hook "
                f"{hook_name!r}, which takes one answer: remove one of them from the recipe's plugins"
                f"{_REFINE_HINT.get(hook_name, '')}"
            )


def _guard_hooks(pm: pluggy.PluginManager) -> None:
    """Make every hook implementation receive all of its spec's arguments (so its answer can be
    checked against them), call the plugin with the arguments it takes in the hook's gradient
    mode, check the answer (the table's check), and name the plugin and the hook in any error."""
    for hook_name in hookspecs.HOOK_KINDS:
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            impl.function = _guarded(impl.function, impl.argnames, caller.spec.argnames,
                                     impl.plugin, step_table.HOOKS[hook_name])
            pm.takes[hook_name, plugin_name(impl.plugin)] = impl.argnames
            impl.argnames = caller.spec.argnames


def _guarded(fn, wanted: tuple[str, ...], given: tuple[str, ...], plugin: Any, spec: step_table.Hook):
    hook, check = spec.name, spec.check
    grad = torch.no_grad if spec.grad == "no_grad" else contextlib.nullcontext

    @functools.wraps(fn)
    def call(*args):
        kwargs = dict(zip(given, args))
        try:
            with grad():
                answer = fn(*(kwargs[name] for name in wanted))
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - a bug in the plugin's hook
            raise plugin_failure(plugin_name(plugin), f"in hook {hook!r}", err, type(plugin).__module__,
                                 removed_attribute_hint(err)) from err
        problem = None if answer is None or check is None else check(answer, kwargs)
        if problem:
            raise PluginError(f"plugin {plugin_name(plugin)!r} gave a wrong answer in hook {hook!r}: {problem}")
        return answer

    return call

