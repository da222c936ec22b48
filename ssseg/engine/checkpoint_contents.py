"""What a checkpoint must hold before ssseg trusts it: finite weights (a diverged run's NaN or
infinite tensors are never written, evaluated, exported or resumed), a hook spec version this
ssseg knows, a training state of the right types and ranges, and optimiser state shaped like
the parameters it belongs to. Each check returns what is wrong, described, or nothing."""

from __future__ import annotations

import numbers
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor

from ssseg.hookspecs import HOOKSPEC_VERSION

MODEL_KEYS = ("student", "teacher", "modules")
SHOWN = 3


def floating_tensors(value: Any, prefix: str) -> Iterator[tuple[str, Tensor]]:
    """(dotted name, tensor) of every floating-point tensor nested in ``value``."""
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex():
            yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from floating_tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from floating_tensors(item, f"{prefix}[{i}]")


def nonfinite(value: Any, prefix: str = "") -> list[str]:
    """The names of the floating tensors in ``value`` holding NaN or ±inf."""
    return [name for name, t in floating_tensors(value, prefix) if not bool(torch.isfinite(t).all())]


def describe_nonfinite(names: list[str]) -> str:
    """``N tensors (a, b, c, ...)``."""
    more = ", ..." if len(names) > SHOWN else ""
    return f"{len(names)} tensor{'s' if len(names) != 1 else ''} ({', '.join(names[:SHOWN])}{more})"


def nonfinite_weights(state: Mapping[str, Any]) -> list[str]:
    """The non-finite model tensors of a checkpoint (student, teacher, contributed modules)."""
    return [n for key in MODEL_KEYS for n in nonfinite(state.get(key), key)]


def spec_version_problem(state: Mapping[str, Any]) -> str | None:
    """Why the checkpoint's hook spec version does not fit this ssseg, or None."""
    version = state.get("hookspec_version")
    if version is None:
        return None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return f"its hook spec version is {version!r}, not a version number"
    if version > HOOKSPEC_VERSION:
        return (f"it was written by a newer ssseg (hook spec version {version}; this one has "
                f"{HOOKSPEC_VERSION}): upgrade ssseg to resume it")
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def training_state_problem(training: Any, iteration: Any, max_iters: int) -> str | None:
    """Why a checkpoint's training state (and its top-level ``iteration``) cannot be resumed
    with a schedule of ``max_iters`` iterations, or None."""
    if not isinstance(training, Mapping):
        return f"its training state is a {type(training).__name__}, not a mapping"
    it = training.get("iteration")
    if not _is_int(it) or not 0 <= it <= max_iters:
        return (f"its iteration {it!r} is not a whole number between 0 and optim.iters ({max_iters}); "
                "to train longer, resume with -o optim.iters=N")
    if it != iteration:
        return f"its training state says iteration {it!r} and its header {iteration!r}"
    skipped, wall = training.get("skipped_steps"), training.get("wall_s")
    if not _is_int(skipped) or not 0 <= skipped <= it:
        return f"its skipped_steps {skipped!r} is not a whole number between 0 and the iteration {it}"
    if not isinstance(wall, numbers.Real) or isinstance(wall, bool) or not wall >= 0:
        return f"its wall_s {wall!r} is not a non-negative number"
    if not isinstance(training.get("last_eval"), Mapping):
        return f"its last_eval is a {type(training.get('last_eval')).__name__}, not a mapping"
    best = training.get("best")
    if not isinstance(best, Mapping) or not all(
            isinstance(v, Mapping) and isinstance(v.get("miou"), numbers.Real) and _is_int(v.get("iteration"))
            for v in best.values()):
        return "its best is not a mapping of model -> {miou: number, iteration: whole number}"
    if not isinstance(training.get("rng"), Mapping):
        return "it has no random generator states"
    return None


def optimizer_state_problem(saved: Any, optimizer: torch.optim.Optimizer) -> str | None:
    """Why ``saved`` (an optimiser's ``state_dict()``) does not fit ``optimizer``'s parameters
    (groups, sizes, and every per-parameter tensor's shape), or None."""
    if not isinstance(saved, Mapping) or not isinstance(saved.get("param_groups"), list) \
            or not isinstance(saved.get("state"), Mapping):
        return "its optimiser state is not an optimiser's state_dict"
    groups = optimizer.param_groups
    if len(saved["param_groups"]) != len(groups) or any(
            not isinstance(s, Mapping) or len(s.get("params", ())) != len(g["params"])
            for s, g in zip(saved["param_groups"], groups)):
        return "its optimiser has other parameter groups than this recipe's model"
    for s, g in zip(saved["param_groups"], groups):
        for index, param in zip(s["params"], g["params"]):
            entry = saved["state"].get(index, {})
            if not isinstance(entry, Mapping):
                return f"its optimiser state of parameter {index} is not a mapping"
            for key, value in entry.items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape != param.shape:
                    return (f"its optimiser state {key!r} of parameter {index} has shape "
                            f"{list(value.shape)}, the parameter {list(param.shape)}")
    return None
