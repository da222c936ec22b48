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


class OldCutMixHelper(OldCutMixPlan):
    """Written for hook spec 5: builds the removed fields in code the registration scan does not
    read (its parent's method); the error at the first step says what changed."""

    name = "old_cutmix_helper"

    @hookimpl
    def schedule_augmentation(self, unlabeled):
        return super().schedule_augmentation(unlabeled)


class CountingHead(_NoConfig):
    """A 1×1 head on the student's logits (hook spec 7): ``forward_heads`` runs it once a step;
    ``relabel`` keeps what it saw in ``outputs.heads``; ``extra_losses`` trains the head."""

    name = "counting_head"
    calls = 0
    seen_in_relabel: dict = {}

    @hookimpl
    def build_modules(self, build):
        return {"head": torch.nn.Conv2d(build.data.num_classes, 1, 1)}

    @hookimpl
    def forward_heads(self, ctx, outputs):
        type(self).calls += 1
        return {"head/labeled": ctx.modules["head"](outputs.labeled)}

    @hookimpl
    def relabel(self, outputs):
        type(self).seen_in_relabel = dict(outputs.heads)

    @hookimpl
    def extra_losses(self, outputs):
        return {"head": outputs.heads["head/labeled"].square().mean()}


class HeadNotATensor(_NoConfig):
    """Answers forward_heads with a number."""

    name = "head_not_a_tensor"

    @hookimpl
    def forward_heads(self):
        return {"head/x": 1.0}
