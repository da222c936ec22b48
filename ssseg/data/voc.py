"""PASCAL VOC 2012 (``dataset: pascal_voc``), with the SBD-augmented training pool.

Layout under ``data.root``: ``JPEGImages/*.jpg`` and ``SegmentationClass/*.png`` holding class
indices (single-channel PNGs, or the official palette PNGs, which read as their indices). 21
classes, 255 = ignore (object borders). Splits (shipped, see :mod:`ssseg.data.splits`): classic
``92``, ``183``, ``366``, ``732``, ``1464`` (labeled from the 1,464 fine images), blended ``1_16``,
``1_8``, ``1_4`` and ``u2pl_1_16``, ``u2pl_1_8``, ``u2pl_1_4`` (labeled from all 10,582), and
``all``; unlabeled = the rest of the 10,582. ``data.options.split_dir`` names another split
directory. Val: the 1,449 images, whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssseg.data.folder import ListedSource, colormap, register_listed, standard_split_dir

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
PALETTE = colormap(len(CLASS_NAMES))


@register_listed("pascal_voc")
def voc_source(root: Path, options: dict[str, Any]) -> ListedSource:
    """PASCAL VOC at ``root``."""
    return ListedSource(name="pascal_voc", root=root,
                        split_dir=standard_split_dir(root, options, "pascal"),
                        class_names=CLASS_NAMES, palette=PALETTE)
