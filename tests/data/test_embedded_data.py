"""The embedded dataset: determinism, the data contract, splits, and option errors."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.data.base import IGNORE_INDEX, DataBundle
from ssseg.data.registry import build_data, dataset_names
from ssseg.data.embedded import CLASS_NAMES, NUM_CLASSES, PALETTE, generate, labeled_indices
from ssseg.recipe.schema import DataConfig
from ssseg.recipe.structure import ConfigError

SMALL = {"size": 32, "train": 60, "val": 20}


def cfg(split="10", crop=32, flip=True, **options):
    return DataConfig(dataset="embedded", split=split, crop=crop, flip=flip,
                      options={**SMALL, **options})


def test_registered():
    assert "embedded" in dataset_names()


def test_same_seed_same_data_different_seed_different_data():
    a, b, c = build_data(cfg()), build_data(cfg()), build_data(cfg(seed=1))
    va = torch.stack([a.val[i]["image"] for i in range(len(a.val))])
    vb = torch.stack([b.val[i]["image"] for i in range(len(b.val))])
    vc = torch.stack([c.val[i]["image"] for i in range(len(c.val))])
    assert torch.equal(va, vb)
    assert not torch.equal(va, vc)
    assert torch.equal(a.labeled.indices, b.labeled.indices)
    # bypass the in-process cache: the generator itself is deterministic
    i1, m1 = generate(8, 32, 3, 0)
    i2, m2 = generate(8, 32, 3, 0)
    i3, _ = generate(8, 32, 4, 0)
    assert np.array_equal(i1, i2) and np.array_equal(m1, m2)
    assert not np.array_equal(i1, i3)


def test_train_and_val_are_different_images():
    tr, _ = generate(10, 32, 0, 0)
    va, _ = generate(10, 32, 0, 1)
    assert not np.array_equal(tr, va)


def test_split_seed_changes_only_the_labeled_choice():
    a, b = build_data(cfg()), build_data(cfg(split_seed=1))
    assert not torch.equal(a.labeled.indices, b.labeled.indices)
    assert a.labeled.images is b.labeled.images  # same generated images (cached)


def test_bundle_metadata():
    b = build_data(cfg())
    assert isinstance(b, DataBundle)
    assert b.num_classes == NUM_CLASSES == len(b.class_names) == len(b.palette)
    assert b.class_names == CLASS_NAMES and b.class_names[0] == "background"
    assert b.palette == PALETTE and all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in PALETTE)
    assert b.ignore_index == IGNORE_INDEX


def _check_image(x, h, w):
    assert x.dtype == torch.float32 and x.shape == (3, h, w)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("crop", [16, 24, 32, 40])
def test_contract_shapes_dtypes_ranges(crop):
    torch.manual_seed(0)
    b = build_data(cfg(crop=crop))
    for i in range(len(b.labeled)):
        s = b.labeled[i]
        assert set(s) == {"image", "mask"}
        _check_image(s["image"], crop, crop)
        assert s["mask"].dtype == torch.int64 and s["mask"].shape == (crop, crop)
        ok = (s["mask"] == IGNORE_INDEX) | ((s["mask"] >= 0) & (s["mask"] < NUM_CLASSES))
        assert bool(ok.all())
    for i in range(5):
        s = b.unlabeled[i]
        assert set(s) == {"image", "valid"}
        _check_image(s["image"], crop, crop)
        assert s["valid"].dtype == torch.bool and s["valid"].shape == (crop, crop)
        assert bool(s["valid"].all()) == (crop <= 32)
    for i in range(len(b.val)):
        s = b.val[i]
        assert set(s) == {"image", "mask", "name"}
        _check_image(s["image"], 32, 32)  # val stays at full size
        assert s["mask"].dtype == torch.int64 and s["mask"].shape == (32, 32)
        assert int(s["mask"].max()) < NUM_CLASSES  # the val set has no ignore pixels
        assert isinstance(s["name"], str)
    assert len({b.val[i]["name"] for i in range(len(b.val))}) == len(b.val)


def test_padding_is_ignored_and_not_valid():
    b = build_data(cfg(crop=40, flip=False))
    lab, unl = b.labeled[0], b.unlabeled[0]
    assert bool((lab["mask"][32:, :] == IGNORE_INDEX).all()) and bool((lab["mask"][:, 32:] == IGNORE_INDEX).all())
    assert int(lab["mask"][:32, :32].max()) < NUM_CLASSES
    assert int(unl["valid"].sum()) == 32 * 32 and not bool(unl["valid"][32:].any())


def test_pad_color_fills_the_padding_of_labeled_and_unlabeled_crops():
    bundle = build_data(attrs.evolve(cfg(crop=40, flip=False), pad_color="imagenet_mean"))
    for sample in (bundle.labeled[0], bundle.unlabeled[0]):
        padding = sample["image"][:, 32:, :].reshape(3, -1)
        assert torch.equal((padding * 255).round(), torch.tensor([[123.], [116.], [103.]]).expand_as(padding))
    assert not bool(bundle.unlabeled[0]["valid"][32:].any())


def test_crop_and_flip_are_views_of_the_image():
    b = build_data(cfg(crop=20, flip=True))
    row = int(b.labeled.indices[0])
    full_img = b.labeled.images[row].float() / 255
    full_mask = b.labeled.masks[row].long()
    torch.manual_seed(1)
    for _ in range(10):
        s = b.labeled[0]
        found = False
        for img, msk in ((full_img, full_mask), (full_img.flip(-1), full_mask.flip(-1))):
            for top in range(13):
                for left in range(13):
                    if torch.equal(img[:, top:top + 20, left:left + 20], s["image"]):
                        assert torch.equal(msk[top:top + 20, left:left + 20], s["mask"])
                        found = True
        assert found


def test_no_flip_no_crop_is_identity():
    b = build_data(cfg(crop=32, flip=False))
    row = int(b.labeled.indices[3])
    s = b.labeled[3]
    assert torch.equal(s["image"], b.labeled.images[row].float() / 255)
    assert torch.equal(s["mask"], b.labeled.masks[row].long())


@settings(max_examples=25, deadline=None)
@given(train=st.integers(1, 200), k=st.integers(1, 200), split_seed=st.integers(0, 2**31))
def test_labeled_unlabeled_disjoint_and_cover_train(train, k, split_seed):
    k = min(k, train)
    lab = labeled_indices(train, str(k), split_seed)
    assert len(lab) == k and len(set(lab.tolist())) == k
    assert torch.equal(lab, labeled_indices(train, str(k), split_seed))
    if k < train:  # nested: a smaller budget is a subset of a larger one
        assert set(labeled_indices(train, str(max(1, k // 2)), split_seed).tolist()) <= set(lab.tolist())


def test_bundle_split_partition():
    b = build_data(cfg(split="13"))
    lab, unl = set(b.labeled.indices.tolist()), set(b.unlabeled.indices.tolist())
    assert len(lab) == 13 and not lab & unl and lab | unl == set(range(SMALL["train"]))
    assert b.labeled.images is b.unlabeled.images


def test_split_all():
    b = build_data(cfg(split="all"))
    assert len(b.labeled) == SMALL["train"]
    assert b.unlabeled is None or len(b.unlabeled) == 0


def test_every_class_present_in_val_and_in_default_sizes():
    b = build_data(cfg())
    present = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    for i in range(len(b.val)):
        present[b.val[i]["mask"].unique()] = True
    assert bool(present.all())
    # even a val set of NUM_CLASSES - 1 images shows every foreground class
    _, m = generate(NUM_CLASSES - 1, 32, 5, 1)
    assert set(np.unique(m).tolist()) >= set(range(1, NUM_CLASSES))


@pytest.mark.parametrize("size", [16, 48, 64])
def test_other_sizes(size):
    img, m = generate(6, size, 0, 0)
    assert img.shape == (6, 3, size, size) and img.dtype == np.uint8
    assert m.shape == (6, size, size) and m.dtype == np.uint8 and m.max() < NUM_CLASSES


@pytest.mark.parametrize("options, key", [
    ({"bogus": 1}, "data.options.bogus"),
    ({"size": "big"}, "data.options.size"),
    ({"size": 8}, "data.options.size"),
    ({"train": 0}, "data.options.train"),
    ({"seed": -1}, "data.options.seed"),
    ({"noise": 2.0}, "data.options.noise"),
    ({"min_objects": 3, "max_objects": 2}, "data.options.max_objects"),
])
def test_bad_options_name_the_key(options, key):
    with pytest.raises(ConfigError) as err:
        build_data(DataConfig(dataset="embedded", split="10", crop=32, options=options))
    assert err.value.path == key
    assert key in str(err.value)
    if key == "data.options.bogus":
        assert "valid keys" in str(err.value) and "size" in str(err.value)


@pytest.mark.parametrize("split", ["0", "61", "half", "-3"])
def test_bad_split(split):
    with pytest.raises(ConfigError) as err:
        build_data(cfg(split=split))
    assert err.value.path == "data.split"


def test_loader_batches():
    b = build_data(cfg(crop=32))
    batch = next(iter(torch.utils.data.DataLoader(b.labeled, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 32, 32)
    vb = next(iter(torch.utils.data.DataLoader(b.val, batch_size=4)))
    assert len(vb["name"]) == 4
