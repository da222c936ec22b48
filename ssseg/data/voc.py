"""PASCAL VOC 2012 (``dataset: pascal_voc``), with the SBD-augmented training pool.

Layout under ``data.root`` (the devkit's ``VOC2012`` folder): ``JPEGImages/*.jpg``,
``SegmentationClass/*.png`` (the official palette PNGs, which read as their class indices) and,
for the SBD-augmented images, ``SegmentationClassAug/*.png`` (single-channel PNGs): a listed
``SegmentationClass/<id>.png`` that is absent is read from ``SegmentationClassAug``. 21 classes,
255 = ignore (object borders). Splits (shipped, see :mod:`ssseg.data.splits`): classic ``92``,
``183``, ``366``, ``732``, ``1464`` (labeled from the 1,464 fine images), blended ``1_16``, ``1_8``,
``1_4`` and ``u2pl_1_16``, ``u2pl_1_8``, ``u2pl_1_4`` (labeled from all 10,582), and ``all``;
unlabeled = the rest of the 10,582. ``data.options.split_dir`` names another split directory: pair
lists, or image-id lists such as the devkit's own ``ImageSets/Segmentation`` (:class:`VocDevkit`
places the ids). Val: the 1,449 images, whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from ssseg.data.folder import ListedSource, colormap, standard_split_dir
from ssseg.data.splits import Pair, read_ids
from ssseg.errors import UserError

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
PALETTE = colormap(len(CLASS_NAMES))
FINE, AUG = "SegmentationClass", "SegmentationClassAug"
DEVKIT_VAL = "ImageSets/Segmentation/val.txt"


def find_voc_mask(path: Path) -> Path | None:
    """The listed mask, or the ``SegmentationClassAug`` twin of a missing
    ``SegmentationClass/<id>.png``; None if neither exists."""
    if path.is_file():
        return path
    if path.parent.name == FINE:
        aug = path.parent.with_name(AUG) / path.name
        return aug if aug.is_file() else None
    return None


@attrs.frozen
class VocDevkit:
    """Image ids in the devkit layout at ``root`` (an :class:`ssseg.data.splits.IdLayout`)."""

    root: Path

    def pair(self, image_id: str, where: str) -> Pair:
        """``JPEGImages/<id>.jpg`` and ``SegmentationClass/<id>.png``, or its
        ``SegmentationClassAug`` twin when only that exists."""
        fine = self.root / FINE / f"{image_id}.png"
        mask = find_voc_mask(fine) or fine
        return Pair(f"JPEGImages/{image_id}.jpg", mask.relative_to(self.root).as_posix(), where)

    def tree(self, role: str) -> list[Pair]:
        """``val``: the ids of the devkit's ``ImageSets/Segmentation/val.txt``; ``pool``: every
        id with a mask in ``SegmentationClass`` or ``SegmentationClassAug``, sorted (the caller
        removes the val images)."""
        if role == "val":
            file = self.root / DEVKIT_VAL
            if not file.is_file():
                raise UserError(f"no val list: the split directory has no val.txt, and {file} is absent")
            return read_ids(file, self)
        masks = {m.stem: m for folder in (AUG, FINE) for m in (self.root / folder).glob("*.png")}
        if not masks:
            raise UserError(f"no training pool: the split directory has no pool.txt, and "
                            f"{self.root / FINE} and {self.root / AUG} hold no PNG masks")
        return [Pair(f"JPEGImages/{i}.jpg", masks[i].relative_to(self.root).as_posix(), str(masks[i]))
                for i in sorted(masks)]


def voc_source(root: Path, options: dict[str, Any]) -> ListedSource:
    """PASCAL VOC at ``root``."""
    return ListedSource(name="pascal_voc", root=root,
                        split_dir=standard_split_dir(root, options, "pascal"),
                        class_names=CLASS_NAMES, palette=PALETTE, find_mask=find_voc_mask,
                        layout=VocDevkit(root))
