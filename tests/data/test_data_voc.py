"""PASCAL VOC: the real layout round-trips (index and palette PNGs), splits, metadata, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ssseg.data.registry import build_data, dataset_names
from ssseg.data.io import read_index_mask
from ssseg.data.splits import split_names
from ssseg.data.voc import CLASS_NAMES, PALETTE, voc_source
from ssseg.errors import UserError
from ssseg.recipe.schema import DataConfig
from ssseg.recipe.structure import ConfigError

from support.data_trees import H, W, voc_tree

STANDARD = ["1464", "183", "1_16", "1_4", "1_8", "366", "732", "92",
            "u2pl_1_16", "u2pl_1_4", "u2pl_1_8", "all"]


def config(root, split="2", **options) -> DataConfig:
    return DataConfig(dataset="pascal_voc", root=str(root), split=split, crop=8,
                      options={"split_dir": "splits", **options})


def test_round_trip_with_index_and_palette_masks(tmp_path):
    tree = voc_tree(tmp_path)
    assert Image.open(tmp_path / "SegmentationClass/2007_000007.png").mode == "P"
    assert Image.open(tmp_path / "SegmentationClass/2007_000006.png").mode == "L"
    data = build_data(config(tmp_path))
    assert "pascal_voc" in dataset_names()
    assert (len(data.labeled), len(data.unlabeled), len(data.val)) == (2, 4, 2)
    assert data.num_classes == 21 and data.class_names == CLASS_NAMES and data.palette == PALETTE
    assert PALETTE[15] == (192, 128, 128)  # person
    for i in range(len(data.val)):
        sample = data.val[i]
        assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.float32
        jpeg = np.array(Image.open(tmp_path / f"JPEGImages/{sample['name']}.jpg"))
        decoded = (sample["image"] * 255).round().byte()
        assert torch.equal(decoded, torch.from_numpy(jpeg).permute(2, 0, 1))
        assert sample["mask"].dtype == torch.int64
        assert torch.equal(sample["mask"], torch.from_numpy(tree["masks"][sample["name"]]).long())
    labeled, unlabeled = data.labeled[0], data.unlabeled[0]
    assert labeled["image"].shape == (3, 8, 8) and labeled["mask"].shape == (8, 8)
    assert set(unlabeled) == {"image", "valid"} and unlabeled["valid"].dtype == torch.bool


def test_palette_png_reads_as_indices(tmp_path):
    voc_tree(tmp_path)
    mask = read_index_mask(tmp_path / "SegmentationClass/2007_000007.png")
    assert mask.ndim == 2 and mask.max() == 255 and set(np.unique(mask)) <= set(range(21)) | {255}


def test_shipped_standard_splits_are_the_default(tmp_path):
    assert split_names(voc_source(tmp_path, {}).split_dir) == STANDARD


def test_unknown_split_lists_the_valid_ones(tmp_path):
    voc_tree(tmp_path)
    with pytest.raises(UserError, match="unknown split '7'.*valid: 2, all"):
        build_data(config(tmp_path, split="7"))
    with pytest.raises(UserError, match="valid: 1464, 183, 1_16"):
        build_data(DataConfig(dataset="pascal_voc", root=str(tmp_path), split="7"))
    with pytest.raises(UserError, match=r"YAML reads an unquoted 1_16 as the number 116"):
        build_data(DataConfig(dataset="pascal_voc", root=str(tmp_path), split=116))


def test_root_and_option_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.root: dataset 'pascal_voc' reads files"):
        build_data(DataConfig(dataset="pascal_voc", split="92"))
    with pytest.raises(ConfigError, match="data.root: .*nowhere is not a directory"):
        build_data(DataConfig(dataset="pascal_voc", root=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="data.options.colour: unknown key"):
        build_data(config(tmp_path, colour=1))


def test_missing_file_fails_at_build_naming_file_and_line(tmp_path):
    voc_tree(tmp_path)
    (tmp_path / "JPEGImages/2007_000001.jpg").unlink()
    with pytest.raises(UserError, match=r"2007_000001\.jpg: missing \(listed at .*labeled\.txt:2\)"):
        build_data(config(tmp_path))


def test_colour_mask_fails_at_build(tmp_path):
    voc_tree(tmp_path)
    rgb = np.array(PALETTE, dtype=np.uint8)[np.zeros((H, W), dtype=int)]
    Image.fromarray(rgb).save(tmp_path / "SegmentationClass/2007_000000.png")
    with pytest.raises(UserError, match=r"2007_000000\.png: mask is a colour image \(mode 'RGB'\)"):
        build_data(config(tmp_path))
