"""Cityscapes: labelTrainIds and labelIds (mapped on load) round-trip, the id table, splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssseg.data.registry import build_data
from ssseg.data.cityscapes import (CLASS_NAMES, ID_TO_TRAIN_ID, PALETTE, cityscapes_source,
                                   read_cityscapes_mask)
from ssseg.data.splits import split_names
from ssseg.errors import UserError
from ssseg.recipe.schema import DataConfig

from support.data_trees import cityscapes_tree, save_image

SPEC_TABLE = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
              25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def config(root, split="1") -> DataConfig:
    return DataConfig(dataset="cityscapes", root=str(root), split=split, crop=8,
                      options={"split_dir": "splits"})


def test_round_trip_train_ids_and_label_ids(tmp_path):
    tree = cityscapes_tree(tmp_path)  # val: one image with labelTrainIds, one with labelIds only
    data = build_data(config(tmp_path))
    assert (len(data.labeled), len(data.unlabeled), len(data.val)) == (1, 3, 2)
    assert data.num_classes == 19 and data.class_names == CLASS_NAMES and data.palette == PALETTE
    for i in range(len(data.val)):
        sample = data.val[i]
        stem = sample["name"].removesuffix("_leftImg8bit")
        assert torch.equal(sample["mask"], torch.from_numpy(tree["train_ids"][stem]).long())
    assert data.labeled[0]["mask"].shape == (8, 8)


def test_id_table_matches_the_spec(tmp_path):
    expected = np.full(256, 255)
    expected[list(SPEC_TABLE)] = list(SPEC_TABLE.values())
    assert np.array_equal(ID_TO_TRAIN_ID, expected)
    every_id = np.arange(256, dtype=np.uint8).reshape(16, 16)
    save_image(tmp_path / "x_gtFine_labelIds.png", every_id)
    save_image(tmp_path / "x_gtFine_labelTrainIds.png", every_id)
    assert np.array_equal(read_cityscapes_mask(tmp_path / "x_gtFine_labelIds.png"),
                          expected.reshape(16, 16))
    assert np.array_equal(read_cityscapes_mask(tmp_path / "x_gtFine_labelTrainIds.png"), every_id)


def test_shipped_standard_splits_are_the_default(tmp_path):
    names = split_names(cityscapes_source(tmp_path, {}).split_dir)
    assert names == ["1_16", "1_2", "1_30", "1_4", "1_8", "all"]


def test_missing_masks_name_the_listed_file(tmp_path):
    cityscapes_tree(tmp_path)
    next((tmp_path / "gtFine/train/aachen").glob("aachen_000000_*_labelTrainIds.png")).unlink()
    next((tmp_path / "gtFine/train/aachen").glob("aachen_000000_*_labelIds.png")).unlink()
    with pytest.raises(UserError, match=r"aachen_000000_000019_gtFine_labelTrainIds\.png: missing "
                                        r"\(listed at .*labeled\.txt:1\)"):
        build_data(config(tmp_path))
