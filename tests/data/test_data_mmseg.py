"""An MMSegmentation tree (img_dir/{train,val}, ann_dir/{train,val}) is read directly: training
through a recipe, ``ssseg data check``, ``data split`` and ``data convert``, with or without id lists."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from ssseg.data.cli import register
from ssseg.data.registry import build_data
from ssseg.data.splits import read_list
from ssseg.errors import UserError
from ssseg.recipe.schema import DataConfig
from support.data_trees import image_for, mask_for, save_image


def mmseg_tree(root, n_train=5, n_val=2):
    """classes.yaml, img_dir/{train,val}/im<i>.jpg|png and ann_dir/{train,val}/im<i>.png."""
    (root / "classes.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text("names: [a, b, c]\n")
    masks = {}
    for i in range(n_train + n_val):
        subset = "train" if i < n_train else "val"
        save_image(root / "img_dir" / subset / f"im{i}.{'jpg' if i % 2 else 'png'}", image_for(i))
        masks[f"im{i}"] = mask_for(i, 3)
        save_image(root / "ann_dir" / subset / f"im{i}.png", masks[f"im{i}"])
    return masks


def config(root, split="all", **options):
    return DataConfig(dataset="mmseg", root=str(root), split=split, crop=4, options=options)


def data_cli(capsys, *argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["data", *argv])
    return args.func(args), capsys.readouterr().out


def test_the_tree_alone_trains_split_all_with_its_val_set(tmp_path):
    masks = mmseg_tree(tmp_path)
    data = build_data(config(tmp_path))
    assert len(data.labeled) == 5 and data.unlabeled is None and len(data.val) == 2
    assert data.class_names == ("a", "b", "c")
    sample = data.val[0]
    assert sample["name"] == "im5" and np.array_equal(sample["mask"].numpy(), masks["im5"])
    with pytest.raises(UserError, match=r"unknown split '2'.*does not exist, so the one split is 'all'"):
        build_data(config(tmp_path, split="2"))


def test_id_lists_add_splits_whose_unlabeled_images_are_the_rest_of_the_pool(tmp_path):
    mmseg_tree(tmp_path)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "2.txt").write_text("im0\nim3\n")
    data = build_data(config(tmp_path, split="2"))
    assert len(data.labeled) == 2 and len(data.unlabeled) == 3 and len(data.val) == 2
    (tmp_path / "splits" / "2.txt").write_text("im0\nim9\n")
    with pytest.raises(UserError, match=r"2\.txt:2: image id 'im9' is in neither .*img_dir/train"):
        build_data(config(tmp_path, split="2"))


def test_data_check_split_and_convert_read_it(tmp_path, capsys):
    mmseg_tree(tmp_path)
    code, out = data_cli(capsys, "check", str(tmp_path), "--dataset", "mmseg")
    assert code == 0 and "OK: 7 image-mask pairs" in out
    (tmp_path / "ann_dir" / "train" / "im2.png").unlink()
    code, out = data_cli(capsys, "check", str(tmp_path), "--dataset", "mmseg")
    assert code == 1 and f"{tmp_path / 'ann_dir/train/im2.png'}: missing" in out
    mmseg_tree(tmp_path)
    code, _ = data_cli(capsys, "split", "--root", str(tmp_path), "--dataset", "mmseg", "--labeled", "2",
                       "--out", str(tmp_path / "drawn"))
    assert code == 0 and len(read_list(tmp_path / "drawn" / "labeled.txt")) == 2
    ids = tmp_path / "two.txt"
    ids.write_text("im1\nim4\n")
    code, out = data_cli(capsys, "convert", str(tmp_path), "--dataset", "mmseg", "--labeled", str(ids),
                         "--out", str(tmp_path / "pairs"))
    assert code == 0 and "pool.txt (5 pairs), val.txt (2 pairs)" in out
    assert [p.image for p in read_list(tmp_path / "pairs" / "two" / "labeled.txt")] == \
        ["img_dir/train/im1.jpg", "img_dir/train/im4.png"]
