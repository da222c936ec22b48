"""Datasets described by split lists, and the generic ``folder`` dataset.

VOC, Cityscapes and ``folder`` are all a root directory plus a split directory (see
:mod:`ssseg.data.splits`); they differ in how masks are decoded and in their class metadata, which a
:class:`ListedSource` carries. :func:`build_listed` turns a source and a ``DataConfig`` into a
:class:`DataBundle` after :func:`ssseg.data.check.preflight` has checked the files.

The folder dataset (``dataset: folder``)::

    <root>/classes.yaml         names: [background, road, ...]    # any number of classes (<= 255)
                                palette: [[0, 0, 0], [128, 64, 128], ...]   # optional
    <root>/<any image paths>    RGB images (any format PIL / torchvision read)
    <root>/<any mask paths>     index masks: single-channel or palette PNGs, 255 = ignore
    <root>/splits/pool.txt, val.txt, <split>/labeled.txt [, <split>/unlabeled.txt]

``data.options``: ``split_dir`` (default ``splits``) and ``classes`` (default ``classes.yaml``),
both relative to the root. Unlabeled lists may give image paths alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import attrs
import numpy as np
import torch
import yaml
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from ssseg.data.base import IGNORE_INDEX, DataBundle
from ssseg.data.check import Sample, preflight
from ssseg.data.io import read_image, read_index_mask
from ssseg.data.splits import (ALL, IdLayout, SplitLists, id_pool_and_val, load_split, load_val,
                               shipped_split_dir, split_names)
from ssseg.data.transforms import PAD_COLORS, WeakPipeline
from ssseg.errors import UserError
from ssseg.recipe.structure import structure

Palette = tuple[tuple[int, int, int], ...]


def existing_file(path: Path) -> Path | None:
    """``path`` if it is a file, else None (the default mask locator)."""
    return path if path.is_file() else None


def colormap(n: int) -> Palette:
    """The PASCAL VOC colour map for ``n`` classes (bits of the index spread over R, G, B)."""
    index = np.arange(n)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (index >> (3 * shift + channel)) & 1
            rgb[:, channel] |= bit << (7 - shift)
    return tuple(tuple(int(c) for c in row) for row in rgb)


@attrs.frozen
class ListedSource:
    """Where a list-described dataset lives and how to read it.

    ``read_mask(path) -> uint8 [H, W]`` decodes a mask to class indices; ``find_mask(listed path)``
    gives the file to read for a listed mask, or None if it is missing; ``layout`` places image
    ids in the dataset's official layout (None: the split directory must hold pair lists).
    ``lists_optional``: without a split directory, the layout's tree is the one split ``all``.
    """

    name: str
    root: Path
    split_dir: Path
    class_names: tuple[str, ...]
    palette: Palette
    read_mask: Callable[[Path], np.ndarray] = read_index_mask
    find_mask: Callable[[Path], Path | None] = existing_file
    layout: IdLayout | None = None
    lists_optional: bool = False

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

    @property
    def tree_only(self) -> bool:
        """Whether the splits come from the layout's tree alone (no split directory)."""
        return self.lists_optional and self.layout is not None and not self.split_dir.exists()

    def split_names(self) -> list[str]:
        """The splits the split directory offers."""
        return [ALL] if self.tree_only else split_names(self.split_dir)

    def lists(self, split: str) -> SplitLists:
        """The pairs of ``split``."""
        if not self.tree_only:
            return load_split(self.split_dir, split, self.layout)
        if split != ALL:
            raise UserError(f"data.split: unknown split {split!r}: {self.split_dir} does not exist, so "
                            f"the one split is {ALL!r} (every training image labeled); write id lists "
                            f"<split>.txt (one image id per line) there for others")
        pool, val, _ = id_pool_and_val(None, self.layout)
        return SplitLists(labeled=pool, unlabeled=None, val=val)

    def val_lists(self) -> SplitLists:
        """Only the val pairs."""
        if self.tree_only:
            return SplitLists(labeled=[], unlabeled=None, val=self.layout.tree("val"))
        return load_val(self.split_dir, self.layout)


class ListedDataset(Dataset):
    """One role (``labeled``, ``unlabeled`` or ``val``) of a list-described dataset.

    ``labeled`` and ``unlabeled`` samples go through ``weak``; ``val`` samples keep their size.
    Unlabeled masks are never read.
    """

    def __init__(self, samples: list[Sample], role: str, read_mask: Callable[[Path], np.ndarray],
                 weak: WeakPipeline | None = None):
        self.samples, self.role, self.read_mask, self.weak = samples, role, read_mask, weak

    def __len__(self) -> int:
        return len(self.samples)

    def image_id(self, i: int) -> str:
        """The identity of sample ``i``'s image: its file name without the suffix (a dataset pass
        refuses a list in which two images share one)."""
        return Path(self.samples[i][0]).stem

    def full_image(self, i: int) -> torch.Tensor:
        """Sample ``i``'s image at its own size, float ``[3,H,W]`` in [0, 1], not augmented."""
        return F.to_dtype(read_image(self.samples[i][0]), torch.float32, scale=True)

    def weak_pair(self, i: int, mask: torch.Tensor) -> dict[str, Any]:
        """Sample ``i``'s image with ``mask`` (``[H,W]``, e.g. a stored pseudo-label) through the
        weak pipeline: ``{"image", "mask"}`` like a labeled sample (padding 255)."""
        image, mask, _ = self.weak(read_image(self.samples[i][0]), mask)
        return {"image": image, "mask": mask}

    def __getitem__(self, i: int) -> dict[str, Any]:
        image_path, mask_path = self.samples[i]
        image = read_image(image_path)
        mask = (torch.from_numpy(self.read_mask(Path(mask_path)))
                if self.role != "unlabeled" else None)
        if self.role == "val":
            return {"image": F.to_dtype(image, torch.float32, scale=True), "mask": mask.long(),
                    "name": Path(image_path).stem}
        image, mask, valid = self.weak(image, mask)
        if self.role == "labeled":
            return {"image": image, "mask": mask}
        return {"image": image, "valid": valid}


def build_listed(cfg, source: ListedSource, needs: str = "train") -> DataBundle:
    """The :class:`DataBundle` of ``source`` for a ``DataConfig`` (split, crop, scale, flip,
    pad_color); only the lists ``needs`` names are read (``val``: val.txt; ``classes``: none)."""
    if needs == "train":
        lists = source.lists(str(cfg.split))
    else:
        lists = source.val_lists() if needs == "val" else SplitLists(labeled=[], unlabeled=None, val=[])
    located = preflight(source, lists)
    weak = WeakPipeline(crop=cfg.crop, scale=tuple(cfg.scale), flip=cfg.flip,
                        fill=PAD_COLORS[cfg.pad_color])

    def dataset(role: str, pipeline: WeakPipeline | None) -> ListedDataset | None:
        return ListedDataset(located[role], role, source.read_mask, pipeline) if located[role] else None

    return DataBundle(
        labeled=dataset("labeled", weak), unlabeled=dataset("unlabeled", weak), val=dataset("val", None),
        num_classes=source.num_classes, class_names=source.class_names, palette=source.palette,
        ignore_index=IGNORE_INDEX)


@attrs.frozen
class StandardOptions:
    """``data.options`` for datasets with shipped standard splits (VOC, Cityscapes)."""

    split_dir: str | None = None  # relative to the root (or absolute); None: the shipped splits


def standard_split_dir(root: Path, options: dict[str, Any], family: str) -> Path:
    """The split directory ``options`` name, or the shipped ``family`` (``pascal``, ``cityscapes``)."""
    opt = structure(StandardOptions, options, "data.options")
    return root / opt.split_dir if opt.split_dir else shipped_split_dir(family)


# ------------------------------------------------------------------------------ folder dataset


@attrs.frozen
class FolderOptions:
    """``data.options`` for ``dataset: folder`` (paths relative to the root)."""

    split_dir: str = "splits"
    classes: str = "classes.yaml"


def read_classes(path: Path) -> tuple[tuple[str, ...], Palette]:
    """Class names and palette from a ``classes.yaml`` (``names``: list, ``palette``: optional
    list of ``[r, g, b]``; default the VOC colour map)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"{path}: cannot read the class list ({err.strerror or err}); it should "
                        "hold 'names: [background, ...]'") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict) or set(data) - {"names", "palette"}:
        raise UserError(f"{path}: expected a mapping with keys 'names' and optional 'palette'")
    names = data.get("names")
    if (not isinstance(names, list) or not 1 <= len(names) <= IGNORE_INDEX
            or not all(isinstance(n, str) for n in names)):
        raise UserError(f"{path}: names: expected a list of 1 to {IGNORE_INDEX} class names (strings)")
    palette = data.get("palette")
    if palette is None:
        return tuple(names), colormap(len(names))
    if (not isinstance(palette, list) or len(palette) != len(names)
            or not all(isinstance(c, list) and len(c) == 3
                       and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette)):
        raise UserError(f"{path}: palette: expected {len(names)} colours (one per name), "
                        "each [r, g, b] with integers in [0, 255]")
    return tuple(names), tuple(tuple(c) for c in palette)


def folder_source(root: Path, options: dict[str, Any]) -> ListedSource:
    """The folder dataset at ``root`` (see the module doc)."""
    opt = structure(FolderOptions, options, "data.options")
    names, palette = read_classes(root / opt.classes)
    return ListedSource(name="folder", root=root, split_dir=root / opt.split_dir,
                        class_names=names, palette=palette)
