"""MMSegmentation's folder layout, read directly (no hand-written lists)::

    <root>/img_dir/train/*.jpg|png    <root>/ann_dir/train/<stem>.png   (index masks, 255 = ignore)
    <root>/img_dir/val/*.jpg|png      <root>/ann_dir/val/<stem>.png
    <root>/classes.yaml               names: [...], palette: [...] (optional), as for ``folder``
    <root>/splits/<split>.txt         optional: the labeled image ids (stems) of each split

The training pool is ``img_dir/train``, the val set ``img_dir/val``. Without a split directory the
one split is ``all`` (every training image labeled); a split directory of id lists adds a split
per list (its unlabeled images: the rest of the pool). ``ssseg data convert`` writes pair lists
from it like from any id layout.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import attrs

from ssseg.data.folder import ListedSource, read_classes
from ssseg.data.splits import Pair
from ssseg.errors import UserError
from ssseg.recipe.structure import structure

SUBSETS = {"pool": "train", "val": "val"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@attrs.frozen
class MMSegLayout:
    """Places image ids (file stems) in ``img_dir/<subset>`` and ``ann_dir/<subset>``."""

    root: Path

    @functools.cached_property
    def images(self) -> dict[str, dict[str, str]]:
        """Per subset (``train``, ``val``): image stem -> image path relative to the root."""
        return {subset: {p.stem: p.relative_to(self.root).as_posix()
                         for p in sorted((self.root / "img_dir" / subset).glob("*"))
                         if p.suffix.lower() in IMAGE_SUFFIXES}
                for subset in SUBSETS.values()}

    def _pair(self, subset: str, image_id: str, where: str) -> Pair:
        return Pair(self.images[subset][image_id], f"ann_dir/{subset}/{image_id}.png", where)

    def pair(self, image_id: str, where: str) -> Pair:
        """The image and mask of ``image_id`` (in ``train``, else ``val``)."""
        for subset in SUBSETS.values():
            if image_id in self.images[subset]:
                return self._pair(subset, image_id, where)
        raise UserError(f"{where}: image id {image_id!r} is in neither {self.root}/img_dir/train "
                        "nor img_dir/val")

    def tree(self, role: str) -> list[Pair]:
        """Every image of ``img_dir/train`` (``pool``) or ``img_dir/val`` (``val``) with its mask."""
        subset = SUBSETS[role]
        found = self.images[subset]
        if not found:
            raise UserError(f"no {role} images: {self.root / 'img_dir' / subset} holds no images "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        return [self._pair(subset, stem, str(self.root / "img_dir" / subset / Path(path).name))
                for stem, path in found.items()]


@attrs.frozen
class MMSegOptions:
    """``data.options`` for ``dataset: mmseg`` (paths relative to the root)."""

    split_dir: str = "splits"
    classes: str = "classes.yaml"


def mmseg_source(root: Path, options: dict[str, Any]) -> ListedSource:
    """The MMSegmentation-layout dataset at ``root`` (see the module doc)."""
    opt = structure(MMSegOptions, options, "data.options")
    names, palette = read_classes(root / opt.classes)
    return ListedSource(name="mmseg", root=root, split_dir=root / opt.split_dir, class_names=names,
                        palette=palette, layout=MMSegLayout(root), lists_optional=True)
