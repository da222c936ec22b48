"""Checkpoints: model, teacher, contributed modules, plugin state, optimiser and the training state
(:class:`~ssseg.engine.state.TrainingState`: iteration, RNG states, scaler, evaluations), written
atomically (temporary file, then rename) so an interrupted write leaves the previous one.

A checkpoint holds only tensors and plain Python values and is read with
``torch.load(weights_only=True)``, so loading one (perhaps downloaded) can never run code.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ssseg.engine.checkpoint_contents import (describe_nonfinite, nonfinite, nonfinite_weights,
                                              optimizer_state_problem, spec_version_problem,
                                              training_state_problem)
from ssseg.errors import Diverged, UserError
from ssseg.files import link_atomically, write_atomically
from ssseg.hookspecs import HOOKSPEC_VERSION
from ssseg.plugin_faults import plugin_failure
from ssseg.recipe.differences import incompatible_changes
from ssseg.recipe.structure import unstructure
from ssseg.run_files import BEST, LAST, snapshot

REQUIRED_KEYS = ("iteration", "recipe", "student")
RESUME_KEYS = ("teacher", "plugins", "optimizer", "training")
# what torch.load(weights_only=True) reads back besides tensors, lists, tuples and dicts
PLAIN_TYPES = (int, float, bool, complex, str, bytes, type(None), torch.Size, torch.dtype, torch.device)
SHOWN_KEYS = 3


def state_of(run, plugins: Mapping[str, Any]) -> dict[str, Any]:
    """Everything needed to continue the run exactly where it is, as tensors and plain values,
    with the state of ``plugins`` (by recipe key; a plugin whose ``state_dict()`` fails or returns
    anything else is named)."""
    state = {
        "iteration": run.iteration,
        "hookspec_version": HOOKSPEC_VERSION,
        "recipe": unstructure(run.recipe),
        "student": run.student.state_dict(),
        "teacher": run.teacher.state_dict() if run.separate_teacher else None,
        "modules": {name: module.state_dict() for name, module in run.modules.items()},
        "plugins": {k: _plugin_state(k, p) for k, p in plugins.items() if hasattr(p, "state_dict")},
        "optimizer": run.optimizer.state_dict(),
        "training": run.state.state_dict(),
    }
    found = not_plain(state)
    if found:
        raise UserError(f"cannot save a checkpoint: {found[0]} is a {found[1]}; a checkpoint holds "
                        "only tensors and plain Python values (a plugin's after_eval put it in the metrics?)")
    return state


def _plugin_state(key: str, plugin: Any) -> Any:
    try:
        state = plugin.state_dict()
    except Exception as err:  # noqa: BLE001 - a bug in the plugin
        raise plugin_failure(key, "in state_dict() while saving a checkpoint", err,
                             type(plugin).__module__) from err
    found = not_plain(state, "state_dict()")
    if found:
        raise plugin_failure(key, "in state_dict() while saving a checkpoint", TypeError(
            f"{found[0]} is a {found[1]}; a checkpoint holds only tensors and plain Python values "
            "(int, float, bool, str, None, lists, tuples, dicts): convert it, e.g. with "
            "torch.as_tensor() or float()"), type(plugin).__module__)
    return state


def not_plain(value: Any, where: str = "state") -> tuple[str, str] | None:
    """(where, type name) of the first value that is not a tensor or plain Python data (which
    ``torch.load(weights_only=True)`` would refuse), or None."""
    if isinstance(value, Tensor) or type(value) in PLAIN_TYPES:
        return None
    if type(value) in (dict, OrderedDict):
        items = value.items()
    elif type(value) in (list, tuple):
        items = enumerate(value)
    else:
        return where, f"{type(value).__module__}.{type(value).__qualname__}"
    for key, item in items:
        found = not_plain(item, f"{where}[{key!r}]")
        if found:
            return found
    return None


class NonFiniteWeights(Diverged):
    """The run's weights or state became NaN or infinite; no checkpoint is written from them."""


class Checkpointer:
    """Writes ``last.pt`` (atomically), keeps the last ``keep`` iteration checkpoints as hard
    links ``iter_<N>.pt``, ``best.pt``, and a hard link ``snapshot_<N>.pt`` at each iteration of
    ``snapshots`` (a stage's ``stage_snapshots``), never deleted. Only rank 0 writes."""

    def __init__(self, folder: Path, keep: int = 0, snapshots: tuple[int, ...] = ()):
        self.folder, self.keep, self.snapshots = folder, keep, frozenset(snapshots)

    @property
    def last(self) -> Path:
        """The newest checkpoint's path."""
        return self.folder / LAST

    def save(self, run, plugins, best: bool = False) -> None:
        """Write the run's state and its ``plugins``' (a :class:`~ssseg.plugin_manager.PluginSet`);
        with ``best`` also make it ``best.pt``."""
        if not run.is_main:
            return
        state = state_of(run, plugins.plugins)
        bad = nonfinite(state)
        if bad:
            raise NonFiniteWeights(f"iteration {run.iteration}: not writing a checkpoint: "
                                   f"{describe_nonfinite(bad)} hold NaN or infinite values", run.iteration)
        write_atomically(self.last, lambda file: torch.save(state, file))
        if best:
            link_atomically(self.last, self.folder / BEST)
        if run.iteration in self.snapshots:
            link_atomically(self.last, self.folder / snapshot(run.iteration))
        if self.keep:
            it = run.iteration
            link_atomically(self.last, self.folder / f"iter_{it:07d}.pt")
            for old in sorted(self.folder.glob("iter_*.pt"))[: -self.keep]:
                old.unlink()


def read(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, loaded with ``torch.load(weights_only=True)``. A missing,
    unreadable or foreign file, or one that holds Python objects besides tensors and plain values
    (unpickling them could run code), is a user error naming it."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of foreign files
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if isinstance(err, pickle.UnpicklingError) and refused:
            raise UserError(f"refusing to load {path}: it holds the Python object {refused[1]} besides "
                            "tensors and plain values, and unpickling it could run code; ssseg "
                            "checkpoints hold only tensors and plain values") from None
        raise UserError(f"cannot read checkpoint {path}: not a torch checkpoint, or a damaged one "
                        f"({type(err).__name__}: {_load_failure(err)})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} is not an ssseg checkpoint: it holds a {type(state).__name__}, "
                        "not a mapping")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise UserError(f"{path} is not an ssseg checkpoint: it has no {', '.join(missing)} "
                        f"(keys: {', '.join(map(str, list(state)[:SHOWN_KEYS]))}...)")
    return state


def restore(built, path: Path) -> None:
    """Continue a built run (a :class:`~ssseg.engine.run.BuiltRun`, or the
    :class:`~ssseg.engine.trainer.Trainer` training one) from the checkpoint at ``path``.
    Refuses a checkpoint written by a different recipe (only the schedule length, ``eval`` and
    ``run`` may change)."""
    run = built.run
    state = read(path)
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise UserError(f"cannot resume from {path}: it has no {', '.join(missing)} (written by an "
                        "older ssseg? its weights still evaluate); start a new --out")
    changed = incompatible_changes(state["recipe"], unstructure(run.recipe))
    if changed:
        raise UserError(f"{path} was written by a different recipe ({'; '.join(changed[:3])}); "
                        "resume with the recipe it was written with, or start a new --out")
    problem = (spec_version_problem(state)
               or training_state_problem(state["training"], state["iteration"], run.recipe.optim.iters)
               or optimizer_state_problem(state["optimizer"], run.optimizer))
    if problem:
        raise UserError(f"cannot resume from {path}: {problem}")
    load_models(run, state, path)
    initial = [group["initial_lr"] for group in run.optimizer.param_groups]
    try:
        run.optimizer.load_state_dict(state["optimizer"])
        run.state.load_state_dict(state["training"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} does not fit this recipe: {_first_lines(err)}") from None
    for group, lr in zip(run.optimizer.param_groups, initial):  # the recipe's optim.lr (may change)
        group["initial_lr"] = lr
    for key, plugin in built.plugins.plugins.items():
        if hasattr(plugin, "load_state_dict"):
            _restore_plugin(key, plugin, state["plugins"], path)


def load_weights(run, path: Path) -> int:
    """Load only the model weights (student, teacher, contributed modules) from a checkpoint,
    for evaluation; returns the iteration it was written at."""
    state = read(path)
    load_models(run, state, path)
    return state["iteration"]


def load_models(run, state: dict[str, Any], path: Path) -> None:
    """Load the student, the teacher (when both have one) and every contributed module; a
    checkpoint with NaN or infinite weights is refused, naming them."""
    bad = nonfinite_weights(state)
    if bad:
        raise UserError(f"{path} holds non-finite weights: {describe_nonfinite(bad)} hold NaN or "
                        "infinite values (a diverged run); use an earlier checkpoint")
    load_module(run.student, state["student"], "student", path)
    if run.separate_teacher and state.get("teacher") is not None:
        load_module(run.teacher, state["teacher"], "teacher", path)
    saved = state.get("modules") or {}
    if set(saved) != set(run.modules):
        raise UserError(f"{path} holds the trainable modules {sorted(saved)}, this recipe builds "
                        f"{sorted(run.modules)}; use the recipe the checkpoint was written with")
    for name, module in run.modules.items():
        load_module(module, saved[name], f"module {name!r}", path)


def load_module(module: nn.Module, state: Any, name: str, path: Path) -> None:
    """Load the ``name`` weights of checkpoint ``path`` into ``module``; weights of another
    model are a short user error (how many tensors are missing, unexpected or reshaped)."""
    if not isinstance(state, Mapping):
        raise UserError(f"{path} holds no {name} weights (found {type(state).__name__})")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k, v in own.items() if k in state
                and getattr(state[k], "shape", None) != v.shape]
    if missing or unexpected or reshaped:
        found = [(what, keys) for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                  ("of another shape", reshaped)) if keys]
        counts = ", ".join(f"{len(keys)} {what}" for what, keys in found)
        examples = "; ".join(f"{what}: {', '.join(keys[:SHOWN_KEYS])}" for what, keys in found)
        raise UserError(f"{path} holds the {name} weights of another model ({counts} of "
                        f"{len(own)} tensors; {examples}); use the recipe it was trained with "
                        "(its run folder's recipe.yaml)")
    module.load_state_dict(state)


def _restore_plugin(key: str, plugin: Any, states: dict[str, Any], path: Path) -> None:
    if key not in states:
        raise UserError(f"{path} holds no state of plugin {key!r}; resume with the recipe it was "
                        "written with, or start a new --out")
    try:
        plugin.load_state_dict(states[key])
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a bug in the plugin, or state it cannot take
        raise plugin_failure(key, f"in load_state_dict() while resuming from {path}", err,
                             type(plugin).__module__) from err


def _load_failure(err: Exception) -> str:
    """What torch.load stopped at, without its advice about unsafe loading."""
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
    return detail[1].strip() if detail else _first_lines(err)


def _first_lines(err: Exception) -> str:
    return " ".join(line.strip() for line in str(err).splitlines()[:2])
