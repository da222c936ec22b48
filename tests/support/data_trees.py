"""Tiny dataset trees in the real VOC, Cityscapes and folder layouts, for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ssseg.data.check import check_source
from ssseg.data.cityscapes import TRAIN_ID_OF
from ssseg.data.registry import source_for
from ssseg.data.voc import PALETTE as VOC_PALETTE

H, W = 12, 16


def save_image(path: Path, array: np.ndarray, palette=None) -> None:
    """Write ``array`` (``[H, W]`` -> single channel or palette, ``[H, W, 3]`` -> RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array.astype(np.uint8))
    if palette is not None:
        img = img.convert("P")  # an "L" image converted keeps its values as indices
        img.putpalette([c for rgb in palette for c in rgb])
    img.save(path)


def image_for(i: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth RGB image (JPEG-friendly), different for every ``i``."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(yy * 9 + i * 20) % 256, (xx * 7 + i * 30) % 256,
                     np.full_like(yy, 40 * i % 256)], axis=-1).astype(np.uint8)


def mask_for(i: int, classes: int, h: int = H, w: int = W) -> np.ndarray:
    """Class blocks (every value in [0, classes)) and an ignore (255) border row."""
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy // 4) * 4 + xx // 4 + i) % classes
    mask[0] = 255
    return mask.astype(np.uint8)


def write_lists(split_dir: Path, train: list[str], val: list[str], splits: dict[str, int]) -> None:
    """pool.txt, val.txt and ``<name>/labeled.txt`` (the first ``k`` of the pool) per split;
    the last line of each file lacks its newline."""
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "pool.txt").write_text("\n".join(train))
    (split_dir / "val.txt").write_text("\n".join(val))
    for name, k in splits.items():
        (split_dir / name).mkdir(exist_ok=True)
        (split_dir / name / "labeled.txt").write_text("\n".join(train[:k]))


def voc_tree(root: Path, n_train: int = 6, n_val: int = 2, palette_masks: bool = True) -> dict:
    """VOC: JPEGImages/*.jpg, SegmentationClass/*.png (odd ones palette PNGs when
    ``palette_masks``), and a split directory ``splits`` with split ``"2"``.

    Returns ``{"masks": {stem: array}, "train": [...], "val": [...]}``.
    """
    masks, lines = {}, {"train": [], "val": []}
    for i in range(n_train + n_val):
        stem = f"2007_{i:06d}"
        save_image(root / "JPEGImages" / f"{stem}.jpg", image_for(i))
        masks[stem] = mask_for(i, 21)
        palette = VOC_PALETTE if palette_masks and i % 2 else None
        save_image(root / "SegmentationClass" / f"{stem}.png", masks[stem], palette)
        lines["train" if i < n_train else "val"].append(
            f"JPEGImages/{stem}.jpg SegmentationClass/{stem}.png")
    write_lists(root / "splits", lines["train"], lines["val"], {"2": 2})
    return {"masks": masks, **lines}


def cityscapes_tree(root: Path, n_train: int = 4, n_val: int = 2) -> dict:
    """Cityscapes: leftImg8bit/<set>/<city>/*_leftImg8bit.png with gtFine *_labelIds.png for all
    and *_labelTrainIds.png for even ``i`` only; split directory ``splits`` with split ``"1"``.

    Returns ``{"train_ids": {stem: trainId array}, "train": [...], "val": [...]}``.
    """
    id_of_train_id = np.array(list(TRAIN_ID_OF))  # TRAIN_ID_OF is ordered by trainId
    train_ids, lines = {}, {"train": [], "val": []}
    for i in range(n_train + n_val):
        subset, city = ("train", "aachen") if i < n_train else ("val", "lindau")
        stem = f"{city}_{i:06d}_000019"
        blocks = mask_for(i, 20)  # 0..19, border 255; 19 stands for an unmapped id
        trainid = np.where(blocks >= 19, 255, blocks).astype(np.uint8)
        label_ids = np.where(trainid == 255, 0, id_of_train_id[trainid.clip(max=18)])
        train_ids[stem] = trainid
        image = f"leftImg8bit/{subset}/{city}/{stem}_leftImg8bit.png"
        save_image(root / image, image_for(i))
        gt = root / "gtFine" / subset / city
        save_image(gt / f"{stem}_gtFine_labelIds.png", label_ids)
        if i % 2 == 0:
            save_image(gt / f"{stem}_gtFine_labelTrainIds.png", trainid)
        lines[subset].append(f"{image} gtFine/{subset}/{city}/{stem}_gtFine_labelTrainIds.png")
    write_lists(root / "splits", lines["train"], lines["val"], {"1": 1})
    return {"train_ids": train_ids, **lines}


def folder_tree(root: Path, classes: int = 3, n_train: int = 5, n_val: int = 2) -> dict:
    """A folder dataset: classes.yaml, images/*.png, masks/*.png, splits with split ``"2"``."""
    names = [f"c{k}" for k in range(classes)]
    (root / "classes.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(f"names: [{', '.join(names)}]\n")
    masks, lines = {}, {"train": [], "val": []}
    for i in range(n_train + n_val):
        stem = f"im{i}"
        save_image(root / "images" / f"{stem}.png", image_for(i))
        masks[stem] = mask_for(i, classes)
        save_image(root / "masks" / f"{stem}.png", masks[stem])
        lines["train" if i < n_train else "val"].append(f"images/{stem}.png masks/{stem}.png")
    write_lists(root / "splits", lines["train"], lines["val"], {"2": 2})
    return {"masks": masks, "names": names, **lines}


def voc_devkit_tree(root: Path, n_train: int = 2, n_aug: int = 3, n_val: int = 2) -> dict:
    """The VOC devkit as kept with the SBD augmentation: JPEGImages/*.jpg, SegmentationClass/*.png
    palette PNGs for the fine train and val images, SegmentationClassAug/*.png single-channel PNGs
    for every training image (fine ones included, as distributed), and ImageSets/Segmentation/
    {train,val,trainval}.txt holding ids.

    Returns ``{"masks": {id: array}, "train": [...], "aug": [...], "val": [...]}`` (ids).
    """
    ids = {"train": [f"2007_{i:06d}" for i in range(n_train)],
           "aug": [f"2008_{i:06d}" for i in range(n_aug)],
           "val": [f"2009_{i:06d}" for i in range(n_val)]}
    masks = {}
    for i, image_id in enumerate(ids["train"] + ids["aug"] + ids["val"]):
        save_image(root / "JPEGImages" / f"{image_id}.jpg", image_for(i))
        masks[image_id] = mask_for(i, 21)
        if image_id not in ids["aug"]:
            save_image(root / "SegmentationClass" / f"{image_id}.png", masks[image_id], VOC_PALETTE)
        if image_id not in ids["val"]:
            save_image(root / "SegmentationClassAug" / f"{image_id}.png", masks[image_id])
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for name, listed in (("train", ids["train"]), ("val", ids["val"]),
                         ("trainval", ids["train"] + ids["val"])):
        (sets / f"{name}.txt").write_text("".join(f"{i}\n" for i in listed))
    return {"masks": masks, **ids}


def problems(root: Path, dataset: str = "folder", split: str | None = None, **options) -> list[str]:
    """The messages ``ssseg data check`` prints for the dataset at ``root``."""
    return [str(p) for p in check_source(source_for(dataset, root, options), split).problems]
