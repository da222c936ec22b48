"""Batched, per-sample augmentation on tensors: photometric ops/plans and CutMix."""

from ssseg.augment.cutmix import box_masks, fixmatch_boxes, hard_easy_partners, imas_boxes, mix, mix_from
from ssseg.augment.photometric import (
    OP_NAMES,
    PhotometricPlan,
    apply_plan,
    blend,
    op_id,
    sample_fixmatch_plan,
    sample_imas_plan,
)

__all__ = [
    "OP_NAMES",
    "PhotometricPlan",
    "apply_plan",
    "blend",
    "box_masks",
    "fixmatch_boxes",
    "hard_easy_partners",
    "imas_boxes",
    "mix",
    "mix_from",
    "op_id",
    "sample_fixmatch_plan",
    "sample_imas_plan",
]
