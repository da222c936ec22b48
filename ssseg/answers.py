"""Checks of hook answers where they enter the core: a wrong type or shape is a
:class:`~ssseg.errors.UserError` naming the plugin, the hook and what it gave, instead of a
traceback (or a silent broadcast) somewhere later in the step. Each check takes a non-None answer
and the hook's arguments and returns what is wrong, or None; the step table
(:mod:`ssseg.step_table`) says which hook each one checks."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor, nn

from ssseg.engine.forward import LABELED, WEAK
from ssseg.engine.types import (FEATURE_NAMES, PSEUDO_LABEL_SOURCES, AugmentationPlan, CutMix, EvalModel,
                                FeatureRequest, LossTerm, Pseudo, View)


RESERVED_PARTS = (LABELED, WEAK)
DONORS = ("view", "second", "labeled")


def describe(value: Any) -> str:
    """A short description of a value: a tensor's shape and dtype, else its type (and value)."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {list(value.shape)} ({value.dtype})"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def named_modules(answer: Any, kwargs: dict) -> str | None:
    """A dict of name -> module (``build_modules``)."""
    if not isinstance(answer, dict) or not all(isinstance(k, str) and isinstance(v, nn.Module)
                                               for k, v in answer.items()):
        return f"expected a dict of name -> torch.nn.Module, got {describe(answer)}"
    return None


def module(answer: Any, kwargs: dict) -> str | None:
    """A module (``build_teacher``)."""
    return None if isinstance(answer, nn.Module) else f"expected a torch.nn.Module, got {describe(answer)}"


def source(answer: Any, kwargs: dict) -> str | None:
    """One of the pseudo-label sources."""
    if answer in PSEUDO_LABEL_SOURCES:
        return None
    return f"expected one of {', '.join(map(repr, PSEUDO_LABEL_SOURCES))}, got {describe(answer)}"


def features(answer: Any, kwargs: dict) -> str | None:
    """A FeatureRequest of known feature names."""
    if not isinstance(answer, FeatureRequest):
        return f"expected a FeatureRequest, got {describe(answer)}"
    unknown = sorted((set(answer.student) | set(answer.teacher)) - set(FEATURE_NAMES))
    if unknown:
        return f"unknown feature names {unknown}; valid: {', '.join(FEATURE_NAMES)}"
    return None


def per_instance(answer: Any, kwargs: dict) -> str | None:
    """One value per unlabeled image ``[B]``."""
    batch = kwargs["unlabeled"].image.shape[0]
    if isinstance(answer, Tensor) and tuple(answer.shape) == (batch,):
        return None
    return f"expected a tensor of shape [{batch}] (one value per unlabeled image), got {describe(answer)}"


def views(answer: Any, kwargs: dict) -> str | None:
    """A list of uniquely named views, none with a reserved name."""
    if not isinstance(answer, list) or not all(isinstance(v, View) for v in answer):
        return f"expected a list of View, got {describe(answer)}"
    names = [v.name for v in answer]
    if len(set(names)) != len(names):
        return f"view names must be unique, got {names}"
    if set(names) & set(RESERVED_PARTS):
        return f"view names {sorted(set(names) & set(RESERVED_PARTS))} are reserved for the core's parts"
    return None


def plan(answer: Any, kwargs: dict) -> str | None:
    """An AugmentationPlan whose CutMixes have boxes and partners of the right shapes and donors
    that exist this step."""
    if not isinstance(answer, AugmentationPlan):
        return f"expected an AugmentationPlan, got {describe(answer)}"
    view = kwargs["view"]
    source = kwargs["labeled"].image if view.source == "labeled" else kwargs["unlabeled"].image
    b, _, h, w = source.shape
    for k, cut in enumerate(answer.mixes):
        where = f"mixes[{k}]"
        if not isinstance(cut, CutMix):
            return f"{where}: expected a CutMix, got {describe(cut)}"
        if cut.donor not in DONORS:
            return f"{where}: donor must be one of {', '.join(map(repr, DONORS))}, got {describe(cut.donor)}"
        if cut.donor == "second" and (view.source == "labeled" or kwargs["unlabeled"].second is None):
            return (f"{where}: donor 'second' pastes from the second weak view of the unlabeled batch, "
                    "which no plugin asked for (answer request_features with FeatureRequest(second_view=True))"
                    if view.source == "unlabeled" else f"{where}: a labeled view has no second weak view")
        donors = kwargs["labeled"].image.shape[0] if cut.donor == "labeled" else b
        if not (isinstance(cut.box, Tensor) and cut.box.dtype == torch.bool and tuple(cut.box.shape) == (b, h, w)):
            return f"{where}: box must be a bool tensor of shape [{b}, {h}, {w}], got {describe(cut.box)}"
        if not (isinstance(cut.partner, Tensor) and tuple(cut.partner.shape) == (b,)
                and not cut.partner.is_floating_point()):
            return f"{where}: partner must be an integer tensor of shape [{b}], got {describe(cut.partner)}"
        if b and bool(((cut.partner < 0) | (cut.partner >= donors)).any()):  # one device sync
            return f"{where}: partner indexes a donor batch of {donors} images, got {cut.partner.tolist()}"
    return None


def head_outputs(answer: Any, kwargs: dict) -> str | None:
    """Named tensors computed from the student's outputs."""
    if not isinstance(answer, dict):
        return f"expected a dict of name -> tensor, got {describe(answer)}"
    for name, value in answer.items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            return f"entry {name!r}: expected a string name and a tensor, got {describe(value)}"
    return None


def relabelled(answer: Any, kwargs: dict) -> str | None:
    """New pseudo-labels by view name, for existing unlabeled views, of the shapes they replace."""
    views = kwargs["views"]
    if not isinstance(answer, dict) or not all(isinstance(v, Pseudo) for v in answer.values()):
        return f"expected a dict of view name -> Pseudo, got {describe(answer)}"
    for name, new in answer.items():
        old = views.get(name)
        if old is None or old.pseudo is None or old.view.source != "unlabeled":
            return f"{name!r} is not an unlabeled view of this step; views: {sorted(views)}"
        if new.labels.shape != old.pseudo.labels.shape or new.conf.shape != old.pseudo.conf.shape \
                or new.valid.shape != old.pseudo.valid.shape:
            return (f"view {name!r}: the new pseudo-labels have shape {list(new.labels.shape)}, the view's "
                    f"{list(old.pseudo.labels.shape)}")
    return None


def scalar(answer: Any, kwargs: dict) -> str | None:
    """A scalar floating-point tensor."""
    if isinstance(answer, Tensor) and answer.dim() == 0 and answer.is_floating_point():
        return None
    return f"expected a scalar floating-point tensor, got {describe(answer)}"


def weights(answer: Any, kwargs: dict) -> str | None:
    """Weights ``[B]`` or ``[B,H,W]`` of the view's pseudo-labels."""
    b, h, w = kwargs["pseudo"].labels.shape
    if isinstance(answer, Tensor) and tuple(answer.shape) in ((b,), (b, h, w)):
        return None
    return f"expected a tensor of shape [{b}] or [{b}, {h}, {w}], got {describe(answer)}"


def terms(answer: Any, kwargs: dict) -> str | None:
    """Named scalar loss terms (tensors or LossTerm)."""
    if not isinstance(answer, dict):
        return f"expected a dict of name -> scalar tensor or LossTerm, got {describe(answer)}"
    for name, term in answer.items():
        value = term.value if isinstance(term, LossTerm) else term
        problem = scalar(value, kwargs)
        if not isinstance(name, str) or problem:
            return f"term {name!r}: {problem or 'names must be strings'}"
    return None


def number(answer: Any, kwargs: dict) -> str | None:
    """A real number (or a 0-d tensor)."""
    if isinstance(answer, numbers.Real) and not isinstance(answer, bool):
        return None
    if isinstance(answer, Tensor) and answer.dim() == 0:
        return None
    return f"expected a number, got {describe(answer)}"


def eval_models(answer: Any, kwargs: dict) -> str | None:
    """A dict of name -> module or EvalModel (``eval_models``)."""
    if not isinstance(answer, dict) or not all(isinstance(k, str) and isinstance(v, (nn.Module, EvalModel))
                                               for k, v in answer.items()):
        return f"expected a dict of name -> torch.nn.Module or EvalModel, got {describe(answer)}"
    return None


def iterations(answer: Any, kwargs: dict) -> str | None:
    """Iterations of the stage, each in [1, optim.iters] (``stage_snapshots``)."""
    iters = kwargs["stage"].recipe.optim.iters
    if not isinstance(answer, (tuple, list, set, frozenset)) or not all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) and 1 <= i <= iters for i in answer):
        return f"expected iterations in [1, {iters}] (optim.iters), got {describe(answer)}"
    return None


def training_set(answer: Any, kwargs: dict) -> str | None:
    """A :class:`~ssseg.stages.types.TrainingSet` (``stage_training_set``)."""
    from ssseg.stages.types import TrainingSet

    if not isinstance(answer, TrainingSet):
        return f"expected a TrainingSet, got {describe(answer)}"
    if answer.labeled_copies is not None and answer.labeled_copies < 1:
        return f"labeled_copies must be at least 1, got {answer.labeled_copies}"
    return None
