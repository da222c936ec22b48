"""Checks of hook answers where they enter the core: a wrong type or shape is a
:class:`~ssseg.errors.UserError` naming the plugin, the hook and what it gave, instead of a
traceback (or a silent broadcast) somewhere later in the step."""

from __future__ import annotations

import numbers
from typing import Any, Callable

from torch import Tensor, nn

from ssseg.engine.forward import LABELED, WEAK
from ssseg.engine.types import (FEATURE_NAMES, PSEUDO_LABEL_SOURCES, AugmentationPlan, FeatureRequest,
                                LossTerm, View)


RESERVED_PARTS = (LABELED, WEAK)


def describe(value: Any) -> str:
    """A short description of a value: a tensor's shape and dtype, else its type (and value)."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {list(value.shape)} ({value.dtype})"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _named_modules(answer: Any, kwargs: dict) -> str | None:
    if not isinstance(answer, dict) or not all(isinstance(k, str) and isinstance(v, nn.Module)
                                               for k, v in answer.items()):
        return f"expected a dict of name -> torch.nn.Module, got {describe(answer)}"
    return None


def _module(answer: Any, kwargs: dict) -> str | None:
    return None if isinstance(answer, nn.Module) else f"expected a torch.nn.Module, got {describe(answer)}"


def _source(answer: Any, kwargs: dict) -> str | None:
    if answer in PSEUDO_LABEL_SOURCES:
        return None
    return f"expected one of {', '.join(map(repr, PSEUDO_LABEL_SOURCES))}, got {describe(answer)}"


def _features(answer: Any, kwargs: dict) -> str | None:
    if not isinstance(answer, FeatureRequest):
        return f"expected a FeatureRequest, got {describe(answer)}"
    unknown = sorted((set(answer.student) | set(answer.teacher)) - set(FEATURE_NAMES))
    if unknown:
        return f"unknown feature names {unknown}; valid: {', '.join(FEATURE_NAMES)}"
    return None


def _per_instance(answer: Any, kwargs: dict) -> str | None:
    batch = kwargs["unlabeled"].image.shape[0]
    if isinstance(answer, Tensor) and tuple(answer.shape) == (batch,):
        return None
    return f"expected a tensor of shape [{batch}] (one value per unlabeled image), got {describe(answer)}"


def _views(answer: Any, kwargs: dict) -> str | None:
    if not isinstance(answer, list) or not all(isinstance(v, View) for v in answer):
        return f"expected a list of View, got {describe(answer)}"
    names = [v.name for v in answer]
    if len(set(names)) != len(names):
        return f"view names must be unique, got {names}"
    if set(names) & set(RESERVED_PARTS):
        return f"view names {sorted(set(names) & set(RESERVED_PARTS))} are reserved for the core's parts"
    return None


def _plan(answer: Any, kwargs: dict) -> str | None:
    if not isinstance(answer, AugmentationPlan):
        return f"expected an AugmentationPlan, got {describe(answer)}"
    if answer.cutmix_donor not in ("view", "second"):
        return f"cutmix_donor must be 'view' or 'second', got {describe(answer.cutmix_donor)}"
    if answer.cutmix_donor == "second" and kwargs["unlabeled"].second is None:
        return ("cutmix_donor 'second' pastes from the second weak view, which no plugin asked for: "
                "answer request_features with FeatureRequest(second_view=True)")
    return None


def _scalar(answer: Any, kwargs: dict) -> str | None:
    if isinstance(answer, Tensor) and answer.dim() == 0 and answer.is_floating_point():
        return None
    return f"expected a scalar floating-point tensor, got {describe(answer)}"


def _weights(answer: Any, kwargs: dict) -> str | None:
    b, h, w = kwargs["pseudo"].labels.shape
    if isinstance(answer, Tensor) and tuple(answer.shape) in ((b,), (b, h, w)):
        return None
    return f"expected a tensor of shape [{b}] or [{b}, {h}, {w}], got {describe(answer)}"


def _terms(answer: Any, kwargs: dict) -> str | None:
    if not isinstance(answer, dict):
        return f"expected a dict of name -> scalar tensor or LossTerm, got {describe(answer)}"
    for name, term in answer.items():
        value = term.value if isinstance(term, LossTerm) else term
        problem = _scalar(value, kwargs)
        if not isinstance(name, str) or problem:
            return f"term {name!r}: {problem or 'names must be strings'}"
    return None


def _number(answer: Any, kwargs: dict) -> str | None:
    if isinstance(answer, numbers.Real) and not isinstance(answer, bool):
        return None
    if isinstance(answer, Tensor) and answer.dim() == 0:
        return None
    return f"expected a number, got {describe(answer)}"


# hook -> check of a non-None answer (observers answer nothing)
CHECKS: dict[str, Callable[[Any, dict], str | None]] = {
    "build_modules": _named_modules,
    "build_teacher": _module,
    "pseudo_label_source": _source,
    "request_features": _features,
    "estimate_hardness": _per_instance,
    "plan_views": _views,
    "schedule_augmentation": _plan,
    "supervised_loss": _scalar,
    "weight_loss": _weights,
    "extra_losses": _terms,
    "unsup_weight": _number,
    "eval_models": _named_modules,
}


def answer_problem(hook: str, answer: Any, kwargs: dict) -> str | None:
    """Why ``answer`` is not a valid answer to ``hook`` called with ``kwargs``, or None."""
    check = CHECKS.get(hook)
    return None if answer is None or check is None else check(answer, kwargs)
