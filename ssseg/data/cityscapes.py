"""Cityscapes (``dataset: cityscapes``): 19 classes (trainIds), 2,975 train and 500 val images.

Layout under ``data.root``: ``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` and
``gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png``. Where a listed ``*_labelTrainIds.png``
is absent, its ``*_labelIds.png`` sibling (the official release, before ``createTrainIdLabelImgs``)
is read instead and mapped id -> trainId on load; lists may also name ``*_labelIds.png`` directly.
Splits (shipped): ``1_16``, ``1_8``, ``1_4``, ``1_2``, ``1_30`` and ``all``; unlabeled = the rest
of the 2,975. ``data.options.split_dir`` names another split directory: pair lists, or lists of
image ids (``aachen_000000_000019``), whose val and pool default to the tree's
(:class:`CityscapesTree`). Val: full 1024x2048 images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ssseg.data.base import IGNORE_INDEX
from ssseg.data.folder import ListedSource, standard_split_dir
from ssseg.data.io import read_index_mask
from ssseg.data.splits import Pair
from ssseg.errors import UserError

CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
               "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
               "bus", "train", "motorcycle", "bicycle")
PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
           (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
           (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
           (0, 80, 100), (0, 0, 230), (119, 11, 32))
TRAIN_ID_OF = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
               25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
TRAIN_IDS, LABEL_IDS = "_labelTrainIds.png", "_labelIds.png"
IMAGE = "_leftImg8bit.png"
SUBSETS = ("train", "val", "test")
TREE_SUBSET = {"pool": "train", "val": "val"}


def _id_to_train_id_table() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[list(TRAIN_ID_OF)] = list(TRAIN_ID_OF.values())
    return table


ID_TO_TRAIN_ID = _id_to_train_id_table()


def read_cityscapes_mask(path: Path) -> np.ndarray:
    """A trainId mask (uint8 ``[H, W]``); ``*_labelIds.png`` files are mapped through the table."""
    mask = read_index_mask(path)
    return ID_TO_TRAIN_ID[mask] if path.name.endswith(LABEL_IDS) else mask


def find_cityscapes_mask(path: Path) -> Path | None:
    """The listed mask, or the ``*_labelIds.png`` sibling of a missing ``*_labelTrainIds.png``."""
    if path.is_file():
        return path
    if path.name.endswith(TRAIN_IDS):
        sibling = path.with_name(path.name[: -len(TRAIN_IDS)] + LABEL_IDS)
        return sibling if sibling.is_file() else None
    return None


@attrs.frozen
class CityscapesTree:
    """Image ids (``<city>_<seq>_<frame>``) in the official layout at ``root`` (an
    :class:`ssseg.data.splits.IdLayout`)."""

    root: Path

    def pair(self, image_id: str, where: str) -> Pair:
        """The image of ``image_id`` in whichever of train, val, test holds it (train when none
        does, so the missing file is reported) and its ``*_gtFine_labelTrainIds.png``."""
        city = image_id.split("_", 1)[0]
        subset = next((s for s in SUBSETS if (self.root / "leftImg8bit" / s / city /
                                              f"{image_id}{IMAGE}").is_file()), "train")
        return _pair(subset, city, image_id, where)

    def tree(self, role: str) -> list[Pair]:
        """Every ``leftImg8bit/train`` (``pool``) or ``leftImg8bit/val`` (``val``) image, sorted."""
        folder = self.root / "leftImg8bit" / TREE_SUBSET[role]
        images = sorted(folder.glob(f"*/*{IMAGE}"))
        if not images:
            raise UserError(f"no {role} list: the split directory has no {role}.txt, and {folder} "
                            f"holds no <city>/*{IMAGE}")
        return [_pair(TREE_SUBSET[role], p.parent.name, p.name[: -len(IMAGE)], str(p)) for p in images]


def _pair(subset: str, city: str, image_id: str, where: str) -> Pair:
    return Pair(f"leftImg8bit/{subset}/{city}/{image_id}{IMAGE}",
                f"gtFine/{subset}/{city}/{image_id}_gtFine{TRAIN_IDS}", where)


def cityscapes_source(root: Path, options: dict[str, Any]) -> ListedSource:
    """Cityscapes at ``root``."""
    return ListedSource(name="cityscapes", root=root,
                        split_dir=standard_split_dir(root, options, "cityscapes"),
                        class_names=CLASS_NAMES, palette=PALETTE,
                        read_mask=read_cityscapes_mask, find_mask=find_cityscapes_mask,
                        layout=CityscapesTree(root))
