"""The plugin contract test kit: one call checks that a strategy plugin follows ssseg's rules.

Opt in from a test module (the kit is not autoloaded)::

    pytest_plugins = ["ssseg.testing"]

    def test_contract(plugin_contract):
        plugin_contract(MyPlugin, config={"power": 3.0}, compose_with={"mean_teacher": {}, "fixmatch": {}})

or call :func:`check_plugin` anywhere. A broken rule raises :class:`ContractViolation` (an
``AssertionError``) naming the rule and how to fix it. The rules, in the order checked:

``config``
    the default ``Config`` (and ``config``, when given) structures and validates, and every value
    can be written back in a recipe (``ssseg.recipe.structure``).
``unknown-keys``
    a config key the ``Config`` does not have is refused with a message naming it.
``hookspec``
    ``requires_hookspec`` is not newer than this ssseg, and no removed hook is implemented
    (:mod:`ssseg.compat`).
``hooks``
    every ``@hookimpl`` matches a hook spec by name and arguments (``register_plugins``), and
    no method named after a hook lacks ``@hookimpl``.
``composes``
    a tiny recipe on the embedded data (:data:`TINY_RECIPE`) with the plugin and its companions
    trains 2 iterations with a finite loss, and calls each step hook the plugin implements.
    Companions default to ``mean_teacher`` (unless the plugin builds a teacher) and ``fixmatch``
    (unless it plans views or augmentation); ``compose_with`` replaces them.
``acts``
    the plugin changes training: the tiny recipe with the plugin and its companions and the same
    recipe without it, trained :data:`ACTS_ITERS` iterations from the same warm start
    (:func:`pretrained_start`), differ in a loss term of some iteration or in a trained weight by
    more than float re-association (relative 1e-5), or the one with the plugin evaluates a model
    the other does not (an ``eval_models`` answer), or :func:`check_recipe` refuses the recipe
    with a message naming the plugin. Companions that ``check_recipe`` refuses without the plugin
    (naming them: they need it) are left out of the run without it too. An answer the core would drop (a ``weight_loss``
    that no view loss reads, a hardness nothing consumes, a ``min_kept`` above the batch's pixels)
    is an error, not a silent no-op: refuse such a recipe in ``validate``, saying what to remove or
    set. Exempt: a plugin that answers no decision or contribution hook (only observers, such as
    logging); nothing else opts out. ``tests/strategies/test_compose_matrix.py`` applies the same
    rule to every shipped recipe × every shipped plugin.
``order``
    the recipe with the plugin first and with it last gives the same losses, weights and plugin
    state (up to float re-association, relative 1e-5): contributions must not depend on order.
``resume``
    2 iterations straight and 1 iteration, checkpoint, resume, 1 iteration end with the same
    plugin state (``state_dict()`` and the plugin's tensor, module and number attributes),
    weights and loss.
``shared-randomness``
    two simulated ranks build the same recipe; both seed ``ctx.shared_generator`` alike, and
    ``ctx.generator`` and torch's global generator differently. For 16 probe steps on one batch,
    the kit runs the step through the step runner up to its ``losses`` phase (``until="losses"``:
    ``before_iteration`` to ``unsup_weight``, nothing optimised) and compares the control-flow
    outputs: whether hardness exists, the planned views, which fields of each
    ``AugmentationPlan`` are set (did CutMix fire?), which ``weight_loss`` answers exist and their
    shapes, and λ_u.
``distributed`` (opt-in: ``rules=RULES + OPT_IN_RULES``; real processes, about 15 s)
    two gloo processes (``torch.distributed.run``) train the tiny recipe 2 iterations; every
    trained parameter (student, modules from ``build_modules``, teacher) and every plugin's state
    (``state_dict()`` and its tensor, module and number attributes) must end identical on both
    ranks; the first entry that differs is named. The plugin class must be importable in a
    subprocess (a module on ``sys.path``).

Limits of ``shared-randomness``: both simulated ranks see the same batch and the same model (as
under DDP) and no optimiser step is taken, so a decision derived from per-rank data statistics
(which must be averaged with ``all_reduce_sum_``) is not exercised, and a decision that shows only
in values (box sizes, blend factors) or in observers after the forward is not seen. A choice
that diverges with probability p per step goes unnoticed with probability (1 − p)^16. Real
multi-process runs are tested by ssseg's ``tests/core/test_distributed.py``.

The kit raises its own messages, so pytest need not rewrite its asserts: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
import yaml
from torch import Tensor, nn

from ssseg.compat import hookspec_problem, implemented_hooks
from ssseg.engine.checkpoint import Checkpointer, restore
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.engine.types import AugmentationPlan, UnlabeledBatch
from ssseg.errors import UserError
from ssseg.hookspecs import HOOK_KINDS
from ssseg.plugin_manager import (PluginError, PluginSet, check_recipe, checking_a_stage, instantiate,
                                  register_plugins)
from ssseg.step_table import BUILD_HOOKS, STAGE_HOOKS, UNLABELED_HOOKS
from ssseg.recipe.load import build_recipe, load_recipe, merge
from ssseg.recipe.schema import Recipe
from ssseg.recipe.structure import ConfigError, structure, unstructure

RULES = ("hookspec", "config", "unknown-keys", "hooks", "composes", "acts", "order", "resume",
         "shared-randomness")
# opt-in rules (seconds each, real processes): check_plugin(..., rules=RULES + OPT_IN_RULES)
OPT_IN_RULES = ("distributed",)

TINY_RECIPE: dict[str, Any] = {
    "seed": 0,
    "model": {"arch": "Unet", "encoder": "resnet18",
              "options": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}},
    "data": {"dataset": "embedded", "split": "8", "crop": 32, "batch_labeled": 2,
             "batch_unlabeled": 2, "options": {"size": 32, "train": 24, "val": 6}},
    "optim": {"name": "sgd", "lr": 0.01, "iters": 2},
    "eval": {"every": 1000},
    "run": {"log_every": 1, "checkpoint_every": 1000},
    "plugins": {},
}
# what the contract runs change: a short evaluation, and one thread (fastest for tiny tensors)
CONTRACT_PATCH: dict[str, Any] = {"eval": {"max_images": 2}, "run": {"threads": 1}}
PROBE_STEPS = 16
# the ``acts`` runs: iterations (an EMA teacher needs 3 to differ from the student), and the
# supervised iterations of the warm start they begin from (pretrained_start)
ACTS_ITERS, PRETRAIN_ITERS = 4, 100
# plugin classes under test, importable by the recipe as use: "ssseg.testing:SUBJECTS.<attr>"
SUBJECTS = types.SimpleNamespace()


def tiny_recipe(patch: Mapping[str, Any] | None = None) -> Recipe:
    """:data:`TINY_RECIPE` with ``patch`` merged over it, validated (trains in about a second)."""
    return build_recipe(merge(copy.deepcopy(TINY_RECIPE), dict(patch or {})), "<tiny>")


def tiny_version(recipe: Recipe, iters: int) -> Recipe:
    """``recipe`` (a shipped one, say) at the kit's scale, ``iters`` iterations: :data:`TINY_RECIPE`'s
    model and data with :data:`CONTRACT_PATCH`, and only as many unlabeled images as one batch
    takes, so that one epoch is one iteration and epoch schedules (warm-ups, supervised-only
    epochs) end within the run. Its plugins, ``unsup``, optimiser and seed stay; a
    ``batch_unlabeled`` of 0 stays 0."""
    plain, tiny = unstructure(recipe), TINY_RECIPE["data"]
    plain["model"] = {**plain["model"], **TINY_RECIPE["model"], "encoder_weights": None}
    plain["data"] = {**plain["data"], **tiny,
                     "batch_unlabeled": min(plain["data"]["batch_unlabeled"], tiny["batch_unlabeled"]),
                     "options": {**tiny["options"], "train": int(tiny["split"]) + tiny["batch_unlabeled"]}}
    patch = merge(CONTRACT_PATCH, {"optim": {"iters": iters}, "run": TINY_RECIPE["run"],
                                   "eval": {**TINY_RECIPE["eval"], "every_epochs": None}})
    return build_recipe(merge(plain, patch), recipe.source or "<tiny>")


@functools.cache
def pretrained_start() -> dict[str, Tensor]:
    """The state of :data:`TINY_RECIPE`'s model after :data:`PRETRAIN_ITERS` supervised AdamW
    iterations on its data (about 3 s, once per process): a warm start confident enough that
    thresholds such as τ = 0.95 pass (from scratch every pixel falls below them, and every
    pseudo-label plugin looks inert)."""
    recipe = tiny_recipe(merge(CONTRACT_PATCH, {"data": {"batch_unlabeled": 0}, "run": {"log_every": PRETRAIN_ITERS},
                                                "optim": {"name": "adamw", "lr": 0.002, "iters": PRETRAIN_ITERS}}))
    with tempfile.TemporaryDirectory() as tmp:
        built = build_run(recipe, Path(tmp))
        Trainer(built).train()
    return {k: v.detach().clone() for k, v in built.run.student.state_dict().items()}


def answering_hooks(cls: type) -> list[str]:
    """The decision and contribution hooks plugin class ``cls`` implements that can change one
    training run (a plugin with none only observes, like a logger; stage hooks act between the
    stages of a staged recipe, which tests/core/test_stages.py covers, not within a run)."""
    return [h for h in implemented_hooks(cls)
            if HOOK_KINDS.get(h) in ("decision", "contribution") and h not in STAGE_HOOKS]


def train_tiny(recipe: Recipe, out: Path, start: Mapping[str, Tensor] | None = None) -> _Outcome:
    """Train ``recipe`` in the new folder ``out``: its losses by iteration and trained weights.
    ``start``: a state dict of the recipe's model, loaded after ``setup`` into the student and
    into the separate teacher and every contributed module that has the same entries (a warm
    start, so that confidence thresholds pass and teacher and student differ, as later in a real
    run)."""
    out.mkdir(parents=True)
    built = build_run(recipe, out)
    run = built.run
    if start is not None:
        run.student.load_state_dict(start)
        for module in (*run.modules.values(), *([run.teacher] if run.separate_teacher else [])):
            if module.state_dict().keys() == start.keys():
                module.load_state_dict(start)
    trainer = Trainer(built)
    trainer.train()
    return _outcome(trainer, out)


def training_difference(a: _Outcome, b: _Outcome) -> str | None:
    """The first loss term (of an iteration and term both runs logged) or trained weight in which
    two runs differ by more than float re-association, described; None when they train alike."""
    for it in sorted(a.losses.keys() & b.losses.keys()):
        for term in sorted(a.losses[it].keys() & b.losses[it].keys()):
            if not _same(a.losses[it][term], b.losses[it][term]):
                return f"{term} at iteration {it} is {a.losses[it][term]!r} vs {b.losses[it][term]!r}"
    for name in sorted(a.weights.keys() & b.weights.keys()):
        if not _same(a.weights[name], b.weights[name]):
            return f"weight {name!r} differs: {_show(a.weights[name])} vs {_show(b.weights[name])}"
    return None


def plugin_config(cls: type, params: Mapping[str, Any]) -> Any:
    """The ``Config`` that a recipe's ``plugins.<cls.name>: params`` gives plugin class ``cls``,
    validated as ``ssseg train`` validates it (a :class:`UserError` names the key path)."""
    return structure(cls.Config, dict(params), f"plugins.{cls.name}")


def validate_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Load the recipe at ``path`` and build its plugins (configs validated, hooks registered and
    checked) without data or models: the errors ``ssseg train`` would give, in milliseconds."""
    recipe = load_recipe(path, list(overrides))
    check_recipe(recipe)
    return recipe


class ContractViolation(AssertionError):
    """A plugin broke rule ``rule`` of the contract; the message says what and how to fix it."""

    def __init__(self, rule: str, subject: str, problem: str, fix: str):
        self.rule = rule
        super().__init__(f"plugin contract rule {rule!r} broken by {subject}: {problem}\nFix: {fix}")


def check_plugin(cls: type, config: Mapping[str, Any] | None = None,
                 compose_with: Mapping[str, Mapping[str, Any]] | None = None,
                 recipe: Mapping[str, Any] | None = None, rules: Iterable[str] = RULES,
                 workdir: Path | None = None) -> None:
    """Check plugin class ``cls`` against the contract ``rules`` (all by default, in order).

    ``config``: the plugin's params (default: its Config defaults). ``compose_with``: companion
    plugins, recipe key → params, in recipe order. ``recipe``: a patch over :data:`TINY_RECIPE`
    (for example ``{"data": {"batch_unlabeled": 0}}``). ``workdir``: where runs and checkpoints
    go (default: a temporary folder). Raises :class:`ContractViolation` at the first broken rule.
    """
    rules = list(rules)
    unknown = sorted(set(rules) - set(RULES + OPT_IN_RULES))
    if unknown:
        raise ValueError(f"unknown contract rules {unknown}; valid: {', '.join(RULES + OPT_IN_RULES)}")
    # a plugin of staged methods is checked as one stage's plugin: the kit trains one run
    staged = checking_a_stage() if set(implemented_hooks(cls)) & set(STAGE_HOOKS) else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as tmp, staged:
        contract = _Contract(cls, dict(config or {}), compose_with, dict(recipe or {}),
                             Path(workdir or tmp))
        for rule in rules:
            getattr(contract, rule.replace("-", "_"))()


@pytest.fixture
def plugin_contract(tmp_path: Path):
    """:func:`check_plugin` with its runs under pytest's ``tmp_path``."""
    return functools.partial(check_plugin, workdir=tmp_path)


@attrs.frozen
class _Outcome:
    """What a tiny training run ends with: losses by iteration, weights, the plugin's state, and
    the names of the models its evaluation evaluates."""

    losses: dict[int, dict[str, float]]
    weights: dict[str, Tensor]
    state: dict[str, Any]
    models: tuple[str, ...] = ()


class _Contract:
    """The rules, as methods named after them, for one plugin class."""

    def __init__(self, cls: type, config: dict[str, Any], compose_with, patch: dict[str, Any],
                 workdir: Path):
        self.cls, self.patch, self.workdir = cls, patch, workdir
        self.key = getattr(cls, "name", "") or cls.__name__.lower()
        self.label = f"{cls.__module__}.{cls.__qualname__}"
        token = f"_{id(cls):x}"
        setattr(SUBJECTS, token, cls)
        self.params = {"use": f"{__name__}:SUBJECTS.{token}", **config}
        self.companions = dict(compose_with) if compose_with is not None else self.default_companions()
        if self.key in self.companions:
            raise ValueError(f"compose_with has the plugin's own key {self.key!r}")
        self.runs: dict[str, _Outcome] = {}

    def fail(self, rule: str, problem: str, fix: str):
        """Raise the :class:`ContractViolation` of ``rule``."""
        raise ContractViolation(rule, self.label, problem, fix)

    def default_companions(self) -> dict[str, dict[str, Any]]:
        """mean_teacher and fixmatch, each unless the plugin takes its decision hooks."""
        hooks = set(implemented_hooks(self.cls))
        companions = {} if "build_teacher" in hooks else {"mean_teacher": {}}
        if not hooks & {"plan_views", "schedule_augmentation"}:
            companions["fixmatch"] = {}
        return companions

    def recipe(self, first: bool) -> Recipe:
        """The tiny recipe with the plugin first (or last) among its companions."""
        mine = {self.key: self.params}
        plugins = {**mine, **self.companions} if first else {**self.companions, **mine}
        return tiny_recipe(merge(merge(CONTRACT_PATCH, self.patch), {"plugins": plugins}))

    # -- the rules, in order -------------------------------------------------------------------

    def config(self) -> None:
        """Defaults (or the given config) validate and survive a recipe round trip."""
        try:
            plugin = instantiate(self.key, self.params)
        except PluginError as err:
            self.fail("config", str(err), "declare `@attrs.frozen class Config:` inside the plugin class")
        except ConfigError as err:
            self.fail("config", f"its Config does not validate: {err}",
                      "give every field a default that its validator accepts (and check `config`)")
        plain = unstructure(plugin.config)
        try:
            again = structure(type(plugin.config), plain, f"plugins.{self.key}")
        except (ConfigError, TypeError) as err:
            again = err
        if again != plugin.config:
            self.fail("config", f"its config {plain!r} cannot be written in a recipe and read back "
                      f"({again})", "annotate Config fields with int, float, str, bool, X | None, "
                      "tuple[X, ...], dict[str, X], Literal[...] or an attrs class")

    def unknown_keys(self) -> None:
        """An unknown key is refused, naming it."""
        bogus = "no_such_option"
        try:
            instantiate(self.key, {**self.params, bogus: 1})
        except ConfigError as err:
            if bogus in str(err):
                return
            self.fail("unknown-keys", f"the error for an unknown key does not name it: {err}",
                      "build the plugin's config with ssseg.recipe.structure (a plain attrs Config does)")
        self.fail("unknown-keys", f"config key {bogus!r} was accepted",
                  "use a plain attrs Config; do not accept **kwargs")

    def hookspec(self) -> None:
        """``requires_hookspec`` and the implemented hooks fit this ssseg."""
        problem = hookspec_problem(self.cls)
        if problem:
            self.fail("hookspec", problem, "implement the hooks of this ssseg's docs/hooks.md and "
                      "set requires_hookspec to the version they appeared in, or upgrade ssseg")

    def hooks(self) -> None:
        """Every hook implementation matches a spec; no hook-named method lacks ``@hookimpl``."""
        try:
            register_plugins([instantiate(self.key, self.params)])
        except PluginError as err:
            self.fail("hooks", str(err), "name each @hookimpl method after a hook of docs/hooks.md "
                      "and take only (a subset of) its arguments")
        unmarked = [h for h in HOOK_KINDS if callable(getattr(self.cls, h, None))
                    and h not in implemented_hooks(self.cls)]
        if unmarked:
            self.fail("hooks", f"method(s) {', '.join(unmarked)} are named after hooks but lack "
                      "@hookimpl, so ssseg never calls them", "decorate them with @hookimpl from ssseg.api")

    def composes(self) -> None:
        """2 iterations with the companions: finite losses; the plugin's step hooks are called."""
        outcome = self.train("first", self.recipe(first=True))
        bad = {it: k for it, losses in outcome.losses.items() for k, v in losses.items()
               if not math.isfinite(v)}
        if bad:
            self.fail("composes", f"non-finite losses {bad} (iteration: term)",
                      "keep weights finite and the loss terms bounded")

    def acts(self) -> None:
        """With the plugin the tiny recipe trains differently than without it, or evaluates a
        model it does not, or :func:`check_recipe` refuses it naming it; a plugin that only
        observes is exempt."""
        answering = answering_hooks(self.cls)
        if not answering:
            return
        recipe = self.recipe(first=True)
        try:
            check_recipe(recipe)
        except UserError as err:
            if self.key not in str(err):
                self.fail("acts", f"check_recipe refused the tiny recipe with plugins {', '.join(recipe.plugins)} "
                          f"without naming the plugin: {err}", f"name plugins.{self.key} in the refusal, "
                          "with the hook and what to remove or set")
            return
        runs = {}
        for name, plugins in (("with", recipe.plugins), ("without", self.companions_alone())):
            tiny = tiny_recipe(merge(merge(merge(CONTRACT_PATCH, self.patch), {"optim": {"iters": ACTS_ITERS}}),
                                     {"plugins": plugins}))
            try:
                runs[name] = train_tiny(tiny, self.workdir / f"acts-{name}", pretrained_start())
            except Exception as err:  # noqa: BLE001 - reported as this rule's failure
                self.fail("acts", f"training the tiny recipe {name} the plugin (plugins "
                          f"{', '.join(plugins) or 'none'}) from a warm start failed: {type(err).__name__}: {err}",
                          "pass compose_with= companions that train with and without it")
        same_models = runs["with"].models == runs["without"].models
        if training_difference(runs["with"], runs["without"]) is None and same_models:
            self.fail("acts", f"the tiny recipe with plugins {', '.join(recipe.plugins)} trains as without it "
                      f"(from a warm start, every loss term of {ACTS_ITERS} iterations and every weight equal "
                      f"up to rounding) and evaluates the same models ({', '.join(runs['with'].models)}): its "
                      f"answers to {', '.join(answering)} never change training or evaluation",
                      "refuse the recipes where the core drops its answers (raise UserError from validate "
                      "naming the plugin, the hook and what to remove or set), or pass compose_with= "
                      "companions that use them (a view planner such as fixmatch for weight_loss)")

    def companions_alone(self) -> dict[str, dict[str, Any]]:
        """The companions without the plugin, less those that need it: while :func:`check_recipe`
        refuses them naming a companion (``plugins.<key>``), that companion is left out too."""
        companions = dict(self.companions)
        while True:
            try:
                check_recipe(tiny_recipe(merge(merge(CONTRACT_PATCH, self.patch), {"plugins": companions})))
                return companions
            except UserError as err:
                named = [k for k in re.findall(r"plugins\.(\w+)", str(err)) if k in companions]
                if not named:
                    self.fail("acts", f"the companions without the plugin ({', '.join(companions) or 'none'}) are "
                              f"refused: {err}", "pass compose_with= companions that compose without it")
                del companions[named[0]]

    def order(self) -> None:
        """The plugin first or last in the recipe: the same training."""
        if not self.companions:
            return
        difference = _first_difference(self.train("first", self.recipe(first=True)),
                                       self.train("last", self.recipe(first=False)))
        if difference:
            self.fail("order", f"the recipe with the plugin first and with it last differs: {difference}",
                      "a contribution must not depend on other plugins' answers: do not modify the "
                      "hook arguments (pseudo, view, ctx) in place and do not read another plugin's state")

    def resume(self) -> None:
        """Straight vs checkpoint-at-1-and-resume: the same state, weights and loss."""
        if hasattr(self.cls, "state_dict") != hasattr(self.cls, "load_state_dict"):
            self.fail("resume", "it defines only one of state_dict and load_state_dict, so its state "
                      "is saved but not restored (or the reverse)", "define both")
        recipe = self.recipe(first=True)
        checkpointed = attrs.evolve(recipe, run=attrs.evolve(recipe.run, checkpoint_every=1,
                                                             keep_checkpoints=2))
        fix = ("return everything that changes during training from state_dict() and restore it in "
               "load_state_dict(); the core saves it in the checkpoint")
        straight = self.train("checkpointed", checkpointed, checkpoint=True)
        resumed = self.train("resumed", checkpointed,
                             resume_from=self.workdir / "checkpointed" / "iter_0000001.pt")
        difference = _first_difference(straight, resumed)
        if difference:
            self.fail("resume", "2 iterations straight and 1 iteration, checkpoint, resume, 1 iteration "
                      f"differ: {difference}", fix)

    def shared_randomness(self) -> None:
        """Two simulated ranks take the same control flow."""
        recipe = self.recipe(first=True)
        (rank0, plugins), (rank1, _) = (self.control_flow(recipe, seed) for seed in (1, 2))
        for step, (a, b) in enumerate(zip(rank0, rank1)):
            for key in a:
                if a[key] != b[key]:
                    answering = plugins.answering(key.split("(")[0])
                    self.fail("shared-randomness", f"at probe step {step}, {key} (answered by "
                              f"{', '.join(answering)}) gave {a[key]!r} on simulated rank 0 and "
                              f"{b[key]!r} on rank 1, which share ctx.shared_generator but not "
                              "ctx.generator", "draw random choices that change control flow (which "
                              "views, whether CutMix fires, λ_u) from ctx.shared_generator, and "
                              "per-sample parameters from ctx.generator")

    def distributed(self) -> None:
        """Two gloo processes train the tiny recipe 2 iterations: every trained parameter (student,
        contributed modules, teacher) and every plugin's state end identical on both ranks."""
        folder = self.workdir / "distributed"
        folder.mkdir(parents=True)
        plugins = {**self.recipe(first=True).plugins}
        plugins[self.key] = {**self.params, "use": f"{self.cls.__module__}:{self.cls.__qualname__}"}
        recipe = merge(merge(merge(copy.deepcopy(TINY_RECIPE), CONTRACT_PATCH), self.patch), {"plugins": plugins})
        (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc_per_node", "2", "-m", "ssseg.testing", str(folder / "recipe.yaml"),
                               str(folder)], env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            self.fail("distributed", f"2-process gloo training failed:\n{proc.stderr[-2000:]}",
                      "the plugin must work under DDP: all-reduce per-rank statistics with "
                      "all_reduce_sum_, call ctx.modules[name] once per step with gradient")
        ranks = [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
        for name in sorted(ranks[0]["weights"]):
            if not torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name]):
                self.fail("distributed", f"after 2 iterations on 2 processes, {name} differs between "
                          "the ranks", "train modules through build_modules (the core wraps them for DDP) "
                          "and call ctx.modules[name], not the plain module, in the training forward")
        for key in sorted(ranks[0]["plugins"]):
            a, b = ranks[0]["plugins"][key], ranks[1]["plugins"][key]
            for entry in sorted(a.keys() | b.keys()):
                if entry not in a or entry not in b or not _same(a[entry], b[entry]):
                    self.fail("distributed", f"after 2 iterations on 2 processes, plugin {key!r}'s state "
                              f"{entry!r} differs between the ranks: {_show(a.get(entry))} vs "
                              f"{_show(b.get(entry))}", "state that decides training must agree on "
                              "every rank: reduce per-rank statistics (all_reduce_sum_, all_reduce_mean_, "
                              "all_gather_rows from ssseg.api) before keeping them")

    # -- running the tiny recipe --------------------------------------------------------------

    def train(self, name: str, recipe: Recipe, checkpoint: bool = False,
              resume_from: Path | None = None) -> _Outcome:
        """Train ``recipe`` in ``workdir/name`` (once per name), optionally from a checkpoint;
        failures break ``composes`` (``resume`` for a resumed run)."""
        if name in self.runs:
            return self.runs[name]
        out = self.workdir / name
        out.mkdir(parents=True)
        plugins, rule = ", ".join(recipe.plugins), "composes" if resume_from is None else "resume"
        try:
            built = build_run(recipe, out)
        except Exception as err:  # noqa: BLE001 - reported as this rule's failure
            self.fail(rule, f"building the tiny recipe with plugins {plugins} failed: "
                      f"{type(err).__name__}: {err}", "make setup/build_teacher work with these "
                      "companions, or pass compose_with= the companions the plugin needs")
        trainer = Trainer(built, checkpointer=Checkpointer(out, recipe.run.keep_checkpoints) if checkpoint else None)
        called: set[str] = set()
        built.plugins.watch(lambda hook, answers, kwargs: called.add(hook))
        try:
            if resume_from is not None:
                restore(built, resume_from)
            trainer.train()
        except Exception as err:  # noqa: BLE001 - reported as this rule's failure
            self.fail(rule, f"{'resuming and ' if resume_from else ''}training the tiny recipe with "
                      f"plugins {plugins} failed: {type(err).__name__}: {err}",
                      "see the error; compose_with= sets the companions, and state_dict() must "
                      "return what load_state_dict() accepts")
        exempt = BUILD_HOOKS + STAGE_HOOKS + (UNLABELED_HOOKS if not recipe.data.batch_unlabeled else ())
        idle = [h for h in built.plugins.implements(self.key) if h not in called | set(exempt)]
        if idle and resume_from is None:
            self.fail("composes", f"hook(s) {', '.join(idle)} were never called in 2 iterations with "
                      f"plugins {plugins}", "compose the plugin with plugins that give ssseg occasion to "
                      "call them (compose_with=...), e.g. a view planner such as fixmatch for weight_loss")
        self.runs[name] = _outcome(trainer, out, trainer.plugins[self.key])
        return self.runs[name]

    def control_flow(self, recipe: Recipe, seed: int) -> tuple[list[dict[str, Any]], PluginSet]:
        """One simulated rank: the control-flow outputs of each probe step, and its plugins."""
        trainer = Trainer(build_run(recipe))
        labeled, unlabeled = next(trainer.batches())
        trainer.run.state.reseed(seed, 0)
        torch.manual_seed(seed)
        weights: dict[str, list[tuple[int, ...]]] = {}  # each weight_loss answer's shape, per view

        def record(hook: str, answers: Any, kwargs: dict[str, Any]) -> None:
            if hook == "weight_loss":
                weights[f"weight_loss({kwargs['view'].name})"] = [tuple(a.shape) for a in answers if a is not None]

        trainer.plugins.watch(record)
        steps = []
        for i in range(PROBE_STEPS if unlabeled is not None else 0):
            weights.clear()
            steps.append(decisions(trainer, labeled, unlabeled, i) | weights)
        return steps, trainer.plugins


def train_rank(recipe_path: str, folder: str) -> None:
    """One rank of the ``distributed`` rule (``python -m ssseg.testing RECIPE FOLDER`` under
    ``torch.distributed.run``): train the recipe, then save every trained parameter (student,
    contributed modules, teacher) and every plugin's state to ``FOLDER/rank<N>.pt``."""
    from ssseg.engine.distributed import init_from_env, leave

    init_from_env()
    trainer = Trainer(build_run(load_recipe(recipe_path, [])))
    trainer.train()
    run, named = trainer.run, {"student": trainer.run.student, **trainer.run.modules}
    if run.separate_teacher:
        named["teacher"] = run.teacher
    weights = {f"{m}.{k}": v.detach().cpu().clone() for m, module in named.items()
               for k, v in module.named_parameters()}
    states = {key: plugin_state(plugin) for key, plugin in trainer.plugins.plugins.items()}
    torch.save({"weights": weights, "plugins": states}, Path(folder) / f"rank{run.rank}.pt")
    leave()


def decisions(trainer: Trainer, labeled: dict[str, Tensor], unlabeled: UnlabeledBatch,
              iteration: int) -> dict[str, Any]:
    """The control-flow outputs of the hooks that decide a step's shape: the step runner's phases
    up to ``losses`` at ``iteration`` (nothing is optimised)."""
    result = trainer.runner.step(labeled, unlabeled, until="losses", ctx=trainer.runner.context(iteration))
    out: dict[str, Any] = {"estimate_hardness": result.hardness is not None,
                           "plan_views": [attrs.astuple(v.view) for v in result.views.values()]}
    for name, view in result.views.items():
        if view.view.kind == "image":
            out[f"schedule_augmentation({name})"] = None if view.plan is None else {
                f.name: getattr(view.plan, f.name) is not None for f in attrs.fields(AugmentationPlan)}
    out["unsup_weight"] = result.lambda_u
    return out


def _outcome(trainer: Trainer, out: Path, plugin: Any = None) -> _Outcome:
    """The losses and weights of a trained run, and ``plugin``'s state (none without one)."""
    run = trainer.run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {r["iteration"]: {k: v for k, v in r.items() if k.startswith("loss")}
              for r in records if r["event"] == "train"}
    weights = _flatten("student", run.student)
    for name, module in run.modules.items():
        weights |= _flatten(f"modules.{name}", module)
    if run.separate_teacher:
        weights |= _flatten("teacher", run.teacher)
    models = tuple(sorted({k.removesuffix("/miou") for r in records if r["event"] == "eval"
                           for k in r if k.endswith("/miou")}))
    return _Outcome(losses, weights, {} if plugin is None else plugin_state(plugin), models)


def plugin_state(plugin: Any) -> dict[str, Any]:
    """A plugin's state as the kit compares it: ``state_dict()`` and the tensor, module and
    number attributes of the instance, flattened to ``name.path -> value``."""
    state = _flatten("state_dict()", plugin.state_dict()) if hasattr(plugin, "state_dict") else {}
    for name, value in vars(plugin).items():
        if name not in ("config", "recipe_key"):
            state |= _flatten(name, value)
    return state


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, nn.Module):
        value = value.state_dict()
    if isinstance(value, Mapping):
        return {k: v for key, item in value.items() for k, v in _flatten(f"{prefix}.{key}", item).items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(f"{prefix}[{i}]", item).items()}
    if isinstance(value, Tensor):
        return {prefix: value.detach().cpu().clone()}
    if value is None or isinstance(value, (int, float, bool, str)):
        return {prefix: value}
    return {}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        return torch.allclose(a, b, rtol=1e-5, atol=1e-7) if a.is_floating_point() else torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def _first_difference(a: _Outcome, b: _Outcome) -> str | None:
    """The first loss, weight or plugin-state entry where two outcomes differ, described."""
    for it in sorted(a.losses.keys() & b.losses.keys()):
        for term in sorted(a.losses[it].keys() | b.losses[it].keys()):
            x, y = a.losses[it].get(term), b.losses[it].get(term)
            if not _same(x, y):
                return f"{term} at iteration {it} is {x!r} vs {y!r}"
    for kind, x, y in (("plugin state", a.state, b.state), ("weights", a.weights, b.weights)):
        for name in sorted(x.keys() | y.keys()):
            if name not in x or name not in y or not _same(x[name], y[name]):
                return f"{kind} {name!r} differs: {_show(x.get(name))} vs {_show(y.get(name))}"
    return None


def _show(value: Any) -> str:
    if isinstance(value, Tensor) and value.numel() > 6:
        return f"tensor{tuple(value.shape)} (sum {float(value.double().sum()):.6g})"
    return repr(value)


if __name__ == "__main__":
    train_rank(*sys.argv[1:3])
