"""Datasets as people keep them: the VOC devkit (id lists in ImageSets/Segmentation, palette PNGs
in SegmentationClass, single-channel PNGs in SegmentationClassAug) and the official Cityscapes tree
without split files; ``ssseg data convert`` writes pair lists the loader reads back."""

from __future__ import annotations

import functools
import io
import re

import numpy as np
import pytest
import torch

from support.data_trees import cityscapes_tree, problems, save_image, voc_devkit_tree
from ssseg.cli import main
from ssseg.data import check
from ssseg.data.registry import build_data
from ssseg.data.splits import holds_ids, load_split, read_list, split_names
from ssseg.errors import UserError
from ssseg.progress import Progress
from ssseg.recipe.schema import DataConfig

DEVKIT = "ImageSets/Segmentation"


def voc(root, split="train", split_dir=DEVKIT) -> DataConfig:
    return DataConfig(dataset="pascal_voc", root=str(root), split=split, crop=8,
                      options={"split_dir": split_dir})


def names(dataset) -> list[str]:
    return sorted(dataset.samples[i][0].rsplit("/", 1)[1].split(".")[0] for i in range(len(dataset)))


def test_devkit_id_lists_are_a_split_directory(tmp_path):
    tree = voc_devkit_tree(tmp_path)
    assert holds_ids(tmp_path / DEVKIT) and split_names(tmp_path / DEVKIT) == ["train", "all"]
    data = build_data(voc(tmp_path))
    # labeled: train.txt; unlabeled: the SBD pool (SegmentationClassAug) without train and val
    assert names(data.labeled) == tree["train"] and names(data.unlabeled) == tree["aug"]
    assert names(data.val) == tree["val"]
    for i in range(len(data.val)):  # palette PNGs read as indices, 255 kept
        sample = data.val[i]
        assert torch.equal(sample["mask"], torch.from_numpy(tree["masks"][sample["name"]]).long())
        assert sample["mask"].max() == 255
    all_labeled = build_data(voc(tmp_path, split="all"))
    assert names(all_labeled.labeled) == sorted(tree["train"] + tree["aug"]) and all_labeled.unlabeled is None


def test_devkit_masks_prefer_segmentation_class_and_fall_back_to_aug(tmp_path):
    tree = voc_devkit_tree(tmp_path)
    fine, aug = tree["train"][0], tree["aug"][0]
    save_image(tmp_path / f"SegmentationClassAug/{fine}.png", np.zeros_like(tree["masks"][fine]))
    data = build_data(voc(tmp_path, split="all"))
    masks = {path.rsplit("/", 2)[1] + "/" + path.rsplit("/", 1)[1]: path for _, path in data.labeled.samples}
    assert f"SegmentationClass/{fine}.png" in masks and f"SegmentationClassAug/{aug}.png" in masks
    # pair lists naming SegmentationClass/<id>.png for every pool image (the shipped lists) work too
    pairs = tmp_path / "pairs"
    (pairs / "1").mkdir(parents=True)
    (pairs / "pool.txt").write_text(f"JPEGImages/{aug}.jpg SegmentationClass/{aug}.png\n")
    (pairs / "1/labeled.txt").write_text(f"JPEGImages/{aug}.jpg SegmentationClass/{aug}.png\n")
    (pairs / "val.txt").write_text("".join(f"JPEGImages/{i}.jpg SegmentationClass/{i}.png\n" for i in tree["val"]))
    labeled = build_data(voc(tmp_path, split="1", split_dir="pairs")).labeled
    assert labeled.samples[0][1].endswith(f"SegmentationClassAug/{aug}.png")


def test_data_check_reads_the_devkit_with_progress(tmp_path, monkeypatch, capsys):
    tree = voc_devkit_tree(tmp_path)
    stream = io.StringIO()
    monkeypatch.setattr(check, "Progress", functools.partial(Progress, every_s=0, style="plain", stream=stream))
    assert main(["data", "check", str(tmp_path), "--dataset", "pascal_voc", "--split-dir", DEVKIT]) == 0
    assert "all splits OK" in capsys.readouterr().out
    files = 2 * sum(len(tree[k]) for k in ("train", "aug", "val"))  # every image and its mask
    assert stream.getvalue().splitlines()[-1].startswith(f"data check: reading: {files}/{files} files (100%)")


def test_bad_ids_name_the_file_and_line(tmp_path):
    voc_devkit_tree(tmp_path)
    train = tmp_path / DEVKIT / "train.txt"
    train.write_text(train.read_text() + "2007_999999\n")
    found = problems(tmp_path, "pascal_voc", split_dir=DEVKIT)
    assert len(found) == 2, found  # the image and the mask
    assert re.fullmatch(rf".*JPEGImages/2007_999999\.jpg: missing \(listed at {re.escape(str(train))}:3\)", found[0])
    train.write_text("2007_000000\n2007_000001.jpg\n")
    with pytest.raises(UserError, match=rf"{re.escape(str(train))}:2: expected one image id per line"):
        build_data(voc(tmp_path))
    train.write_text("2007_000000 2007_000001\n")
    with pytest.raises(UserError, match=rf"{re.escape(str(train))}:1: expected one image id"):
        build_data(voc(tmp_path))


def test_a_training_image_in_val_is_a_problem(tmp_path):
    tree = voc_devkit_tree(tmp_path)
    train = tmp_path / DEVKIT / "train.txt"
    train.write_text(train.read_text() + tree["val"][0] + "\n")
    with pytest.raises(UserError, match=rf"train\.txt:3: JPEGImages/{tree['val'][0]}\.jpg is also a val image "
                                        rf"\(at .*val\.txt:1\)"):
        build_data(voc(tmp_path))


def test_id_lists_without_a_layout_are_refused(tmp_path):
    (tmp_path / "classes.yaml").write_text("names: [a, b]\n")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits/1.txt").write_text("im0\n")
    with pytest.raises(UserError, match="holds lists of image ids, and this dataset has no official layout"):
        build_data(DataConfig(dataset="folder", root=str(tmp_path), split="1", crop=8))


def test_cityscapes_id_lists_take_val_and_pool_from_the_tree(tmp_path):
    tree = cityscapes_tree(tmp_path)
    ids = tmp_path / "ids"
    ids.mkdir()
    labeled_id = tree["train"][1].split()[0].rsplit("/", 1)[1].removesuffix("_leftImg8bit.png")
    (ids / "1.txt").write_text(labeled_id + "\n")
    data = build_data(DataConfig(dataset="cityscapes", root=str(tmp_path), split="1", crop=8,
                                 options={"split_dir": "ids"}))
    assert (len(data.labeled), len(data.unlabeled), len(data.val)) == (1, 3, 2)
    for i in range(len(data.val)):  # labelTrainIds, or labelIds mapped
        sample = data.val[i]
        stem = sample["name"].removesuffix("_leftImg8bit")
        assert torch.equal(sample["mask"], torch.from_numpy(tree["train_ids"][stem]).long())
    (ids / "1.txt").write_text(labeled_id + "\nbonn_000000_000019\n")
    assert [m for m in problems(tmp_path, "cityscapes", split="1", split_dir="ids") if "leftImg8bit" in m] == [
        f"{tmp_path}/leftImg8bit/train/bonn/bonn_000000_000019_leftImg8bit.png: missing (listed at {ids}/1.txt:2)"]


def test_convert_writes_pair_lists_the_loader_reads_back(tmp_path, capsys):
    tree = voc_devkit_tree(tmp_path)
    extra = tmp_path / "two.txt"
    extra.write_text("\n".join(tree["aug"][:2]))
    out = tmp_path / "splits"
    assert main(["data", "convert", str(tmp_path), "--dataset", "pascal_voc", "--split-dir", DEVKIT,
                 "--labeled", str(extra), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(
        f"wrote {out}: pool.txt (5 pairs), val.txt (2 pairs), splits train (2 labeled), two (2 labeled); "
        "train with data.options.split_dir: splits")
    assert not holds_ids(out)
    for split in ("train", "all"):
        converted, original = load_split(out, split), build_data(voc(tmp_path, split=split))
        assert [p.key for p in converted.labeled] == [(i, m) for i, m in (
            (s[0].removeprefix(f"{tmp_path}/"), s[1].removeprefix(f"{tmp_path}/")) for s in original.labeled.samples)]
    assert (out / "train/unlabeled.txt").read_text() == "".join(
        f"JPEGImages/{i}.jpg SegmentationClassAug/{i}.png\n" for i in tree["aug"])
    data = build_data(voc(tmp_path, split="two", split_dir="splits"))
    assert names(data.labeled) == tree["aug"][:2] and len(data.unlabeled) == 3
    assert [p.key for p in read_list(out / "val.txt")] == [
        (f"JPEGImages/{i}.jpg", f"SegmentationClass/{i}.png") for i in tree["val"]]


def test_convert_from_the_cityscapes_tree_and_its_errors(tmp_path, capsys):
    tree = cityscapes_tree(tmp_path)
    ids = tmp_path / "few.txt"
    ids.write_text(tree["train"][0].split()[0].rsplit("/", 1)[1].removesuffix("_leftImg8bit.png"))
    out = tmp_path / "out"
    assert main(["data", "convert", str(tmp_path), "--dataset", "cityscapes", "--labeled", str(ids),
                 "--out", str(out)]) == 0
    assert [p.key for p in read_list(out / "val.txt")] == [tuple(line.split()) for line in tree["val"]]
    assert [p.key for p in read_list(out / "few/labeled.txt")] == [tuple(tree["train"][0].split())]
    assert len(read_list(out / "pool.txt")) == 4 and len(read_list(out / "few/unlabeled.txt")) == 3
    capsys.readouterr()
    ids.write_text("bonn_000000_000019\n")
    assert main(["data", "convert", str(tmp_path), "--dataset", "cityscapes", "--labeled", str(ids),
                 "--out", str(out)]) == 2
    assert f"missing (listed at {ids}:1)" in capsys.readouterr().err
    assert main(["data", "convert", str(tmp_path), "--dataset", "cityscapes", "--split-dir", "splits",
                 "--out", str(out)]) == 2
    assert "holds no image-id lists" in capsys.readouterr().err
