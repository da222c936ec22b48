"""Test plugins for hook spec 6: labeled views, labeled CutMix donors, refinements, relabelling,
and plugins written for hook spec 5."""

from __future__ import annotations

import attrs
import torch

from ssseg.api import AugmentationPlan, CutMix, Plugin, View, hookimpl


class _NoConfig(Plugin):
    @attrs.frozen
    class Config:
        pass


class LabeledView(_NoConfig):
    """Plans one view of the labeled batch, unchanged, against its ground truth."""

    name = "labeled_view"

    @hookimpl
    def plan_views(self):
        return [View("lab", 1.0, source="labeled")]


class SourceNone(_NoConfig):
    """Decides that no pseudo-labels are made."""

    name = "source_none"

    @hookimpl
    def pseudo_label_source(self):
        return "none"


class PasteLabeled(_NoConfig):
    """Plans one unlabeled view whose left half comes from labeled image 0 with its ground truth."""

    name = "paste_labeled"

    @hookimpl
    def plan_views(self):
        return [View("pasted", 1.0)]

    @hookimpl
    def schedule_augmentation(self, unlabeled):
        b, _, h, w = unlabeled.image.shape
        box = torch.zeros(b, h, w, dtype=torch.bool, device=unlabeled.image.device)
        box[..., : w // 2] = True
        partner = torch.zeros(b, dtype=torch.long, device=box.device)
        return AugmentationPlan(mixes=(CutMix(box, partner, donor="labeled"),))


class ViewsSeen(_NoConfig):
    """Refines views and plans, recording what it received: adds a coefficient-0 view and a
    whole-image flip to every plan."""

    name = "views_seen"
    SEEN: dict = {}

    @hookimpl
    def refine_views(self, views, labeled):
        ViewsSeen.SEEN["views"] = list(views)
        ViewsSeen.SEEN["labeled"] = labeled.image.shape[0]
        return views + [View("extra", 0.0)]

    @hookimpl
    def refine_augmentation(self, view, plan):
        ViewsSeen.SEEN.setdefault("plans", {})[view.name] = plan
        return AugmentationPlan(photometric=lambda x: x.flip(-1), blend=None,
                                mixes=() if plan is None else plan.mixes)


class RefineViewsToo(ViewsSeen):
    """A second plugin refining views: refused beside ``ViewsSeen``."""

    name = "refine_views_too"


class ZeroLabels(_NoConfig):
    """Relabels every unlabeled view as class 0 everywhere."""

    name = "zero_labels"

    @hookimpl
    def relabel(self, views, outputs):
        assert set(outputs.views) == set(views)
        return {n: attrs.evolve(v.pseudo, labels=torch.zeros_like(v.pseudo.labels))
                for n, v in views.items() if v.pseudo is not None}


class WrongRelabel(_NoConfig):
    """Answers relabel for a view that does not exist."""

    name = "wrong_relabel"

    @hookimpl
    def relabel(self, pseudo):
        return {"nope": pseudo}


class OldCutMixPlan(_NoConfig):
    """Written for hook spec 5: builds its plan with the removed CutMix fields in the hook."""

    name = "old_cutmix_plan"
    requires_hookspec = 5

    @hookimpl
    def plan_views(self):
        return [View("s")]

    @hookimpl
    def schedule_augmentation(self, unlabeled):
        b = unlabeled.image.shape[0]
        return AugmentationPlan(cutmix_box=torch.ones(b, *unlabeled.image.shape[-2:], dtype=torch.bool),
                                cutmix_partner=torch.arange(b))


def _old_plan(unlabeled):
    b = unlabeled.image.shape[0]
    return AugmentationPlan(cutmix_box=torch.ones(b, *unlabeled.image.shape[-2:], dtype=torch.bool),
                            cutmix_partner=torch.arange(b))


class OldCutMixHelper(_NoConfig):
    """Written for hook spec 5: builds the removed fields in a helper the registration scan does
    not read; the error at the first step says what changed."""

    name = "old_cutmix_helper"
    requires_hookspec = 5

    @hookimpl
    def plan_views(self):
        return [View("s")]

    @hookimpl
    def schedule_augmentation(self, unlabeled):
        return _old_plan(unlabeled)
