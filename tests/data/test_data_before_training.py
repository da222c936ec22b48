"""Training refuses the faults ``ssseg data check`` reports, before the first step, for every
labeled and val pair (not a sample of them); 16-bit images keep their grey levels; a byte-order
mark does not hide a listed file; ``ssseg data check`` caps its list, diagnoses a missing part
and counts what it checked."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from ssseg.data.cli import register
from ssseg.data.io import read_image
from ssseg.data.registry import build_data
from ssseg.errors import UserError
from ssseg.recipe.schema import DataConfig
from support.data_trees import H, W, folder_tree, mask_for, save_image


def build(root, split="2"):
    return build_data(DataConfig(dataset="folder", root=str(root), split=split, crop=4))


@pytest.mark.parametrize("fault, message", [
    (lambda root: save_image(root / "masks/im1.png", mask_for(1, 3, h=W, w=H)),  # transposed
     f"masks/im1.png: mask is {H}x{W} (WxH) but its image"),
    (lambda root: save_image(root / "masks/im1.png", np.full((H, W), 7)),
     "masks/im1.png: mask values 7 are outside the 3 classes (0-2) and 255 (ignore)"),
])
def test_one_bad_labeled_pair_anywhere_stops_training_before_it_starts(tmp_path, fault, message):
    """im1 of 30 labeled images: no evenly spaced sample of 8 would read it."""
    folder_tree(tmp_path, n_train=30, n_val=2)
    fault(tmp_path)
    with pytest.raises(UserError, match="1 problem") as err:
        build(tmp_path, split="all")
    assert message in str(err.value)


def test_a_bad_val_pair_stops_it_too(tmp_path):
    folder_tree(tmp_path, n_train=5, n_val=2)
    save_image(tmp_path / "masks/im6.png", np.full((H, W), 9))
    with pytest.raises(UserError, match=r"masks/im6\.png: mask values 9 are outside"):
        build(tmp_path)


def test_an_image_both_labeled_and_unlabeled_is_refused(tmp_path):
    folder_tree(tmp_path, n_train=5, n_val=2)
    (tmp_path / "splits/2/unlabeled.txt").write_text("images/im1.png\nimages/im2.png\n")
    with pytest.raises(UserError, match=r"images/im1\.png is also a labeled image \(at .*labeled\.txt:2\)"):
        build(tmp_path)


def test_a_byte_order_mark_before_the_first_listed_file_is_dropped(tmp_path):
    folder_tree(tmp_path, n_train=5, n_val=2)
    labeled = tmp_path / "splits/2/labeled.txt"
    labeled.write_bytes(b"\xef\xbb\xbf" + labeled.read_bytes())
    assert len(build(tmp_path).labeled) == 2


def test_a_16_bit_grey_image_keeps_its_grey_levels(tmp_path):
    levels = (np.arange(61) * 1000).astype(np.uint16).reshape(1, 61)  # 0 .. 60,000
    Image.fromarray(levels).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    image = read_image(tmp_path / "grey16.png")
    assert image.shape == (3, 1, 61) and image.dtype == torch.uint8
    assert image[0, 0].tolist() == np.round(levels[0] / 257).astype(int).tolist()  # 61 levels, not 2


def run_check(capsys, *argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["data", "check", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def test_data_check_caps_the_list_diagnoses_the_missing_folder_and_counts(tmp_path, capsys):
    folder_tree(tmp_path, n_train=30, n_val=2)
    for i in range(25):
        (tmp_path / f"masks/im{i}.png").unlink()
    code, out = run_check(capsys, str(tmp_path), "--dataset", "folder")
    lines = out.splitlines()
    assert code == 1 and len(lines) == 20 + 3
    assert lines[20] == "... and 5 more"
    assert lines[21] == "25 problem(s) found; 32 image-mask pairs and 0 unlabeled images checked"
    assert lines[22].startswith(f"25 of them are files missing under {tmp_path / 'masks'}: is that part")


def test_data_check_ok_summary_counts_what_it_checked(tmp_path, capsys):
    folder_tree(tmp_path, n_train=5, n_val=2)
    code, out = run_check(capsys, str(tmp_path), "--dataset", "folder", "--split", "2")
    assert code == 0 and "OK: 4 image-mask pairs and 3 unlabeled images checked" in out


def test_the_suggested_command_names_the_split_dir_relative_to_the_root(tmp_path):
    folder_tree(tmp_path, n_train=5, n_val=2)
    (tmp_path / "splits").rename(tmp_path / "lists")
    (tmp_path / "images/im6.png").unlink()
    with pytest.raises(UserError) as err:
        build_data(DataConfig(dataset="folder", root=str(tmp_path), split="2", crop=4,
                              options={"split_dir": "lists"}))
    assert f"ssseg data check {tmp_path} --dataset folder --split-dir lists)" in str(err.value)
