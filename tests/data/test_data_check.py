"""Data checks: every kind of bad file gets its message, naming the file; the CLI's exit codes."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

from ssseg.data.registry import build_data
from ssseg.data.cli import register
from ssseg.errors import UserError
from ssseg.recipe.schema import DataConfig

from support.data_trees import H, W, folder_tree, problems, save_image, voc_tree


def messages(root, dataset="folder", split=None) -> list[str]:
    return problems(root, dataset, split)


def only(found: list[str], pattern: str) -> None:
    assert len(found) == 1, found
    assert re.search(pattern, found[0]), found[0]


def test_clean_trees_have_no_problems(tmp_path):
    folder_tree(tmp_path / "folder")
    voc_tree(tmp_path / "voc")
    assert messages(tmp_path / "folder") == []
    assert problems(tmp_path / "voc", "pascal_voc", split_dir="splits") == []


def test_missing_file_names_the_list_and_line(tmp_path):
    folder_tree(tmp_path)
    (tmp_path / "masks/im1.png").unlink()
    only(messages(tmp_path), r"masks/im1\.png: missing \(listed at .*splits/2/labeled\.txt:2\)")


def test_unreadable_image(tmp_path):
    folder_tree(tmp_path)
    (tmp_path / "images/im6.png").write_bytes(b"not a png")
    only(messages(tmp_path), r"images/im6\.png: unreadable image")


def test_mask_size_differs_from_image(tmp_path):
    folder_tree(tmp_path)
    save_image(tmp_path / "masks/im0.png", np.zeros((H + 1, W), dtype=np.uint8))
    only(messages(tmp_path), rf"masks/im0\.png: mask is {W}x{H + 1} \(WxH\) but its image "
                             rf".*im0\.png is {W}x{H}")


def test_mask_values_outside_the_classes(tmp_path):
    folder_tree(tmp_path, classes=3)
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[0, :3] = [3, 7, 255]
    save_image(tmp_path / "masks/im2.png", mask)
    only(messages(tmp_path), r"masks/im2\.png: mask values 3, 7 are outside the 3 classes \(0-2\)")


def test_colour_mask(tmp_path):
    folder_tree(tmp_path)
    save_image(tmp_path / "masks/im5.png", np.zeros((H, W, 3), dtype=np.uint8))
    only(messages(tmp_path, split="2"), r"masks/im5\.png: mask is a colour image \(mode 'RGB'\)")


def test_check_of_one_split_skips_unlabeled_masks(tmp_path):
    folder_tree(tmp_path)
    (tmp_path / "masks/im4.png").unlink()  # unlabeled in split "2": its mask is never read
    assert messages(tmp_path, split="2") == []
    only(messages(tmp_path), r"im4\.png: missing")  # the pool (split "all") needs it


def test_builder_fails_before_training_with_the_same_message(tmp_path):
    folder_tree(tmp_path)
    (tmp_path / "images/im6.png").unlink()  # a val image
    expected = messages(tmp_path)[0]
    with pytest.raises(UserError, match="1 problem") as err:
        build_data(DataConfig(dataset="folder", root=str(tmp_path), split="2", crop=4))
    assert expected in str(err.value) and "ssseg data check" in str(err.value)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def test_cli_check_exit_codes(tmp_path, capsys):
    folder_tree(tmp_path)
    assert run_cli("check", str(tmp_path), "--dataset", "folder") == 0
    assert "OK" in capsys.readouterr().out
    voc_tree(tmp_path / "voc")
    voc = ["check", str(tmp_path / "voc"), "--dataset", "pascal_voc", "--split-dir", "splits"]
    assert run_cli(*voc) == 0
    (tmp_path / "masks/im1.png").unlink()
    assert run_cli("check", str(tmp_path), "--dataset", "folder", "--split", "2") == 1
    out = capsys.readouterr().out
    assert "im1.png: missing" in out and "1 problem(s) found" in out
    with pytest.raises(UserError, match="valid: cityscapes, folder, mmseg, pascal_voc"):
        run_cli("check", str(tmp_path), "--dataset", "nope")
