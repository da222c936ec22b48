"""ST / ST++ (plugins/self_training.py): each equation on hand-made tensors, and the staged
pipeline end to end on a tiny recipe (stages, snapshots, the split, the label sets)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg_plugins.self_training import (image_miou, reliable_split, snapshot_iterations, stability,
                                   strong_augment)
from ssseg.augment.cutout import cutout
from ssseg.cli import train_built
from ssseg.engine.run_folder import RunFolder
from ssseg.errors import UserError
from ssseg.stages.label_store import written_ids
from ssseg.stages.runner import train_stages


def maps(*rows):
    return torch.tensor(rows).unsqueeze(0)  # [1, H, W]


def test_image_miou_averages_only_classes_present_in_either_map():
    pred = maps([0, 0], [1, 1])
    ref = maps([0, 1], [1, 1])
    # class 0: 1 / 2, class 1: 2 / 3; classes 2 and 3 are in neither map and are left out
    # (a mean over all 4 classes, absent ones as 0 or 1, would give 0.29 or 0.79)
    assert image_miou(pred, ref, num_classes=4).item() == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_image_miou_is_per_image_in_a_batch():
    pred = torch.stack([maps([0, 0], [0, 0])[0], maps([2, 2], [2, 2])[0]])
    ref = torch.stack([maps([0, 0], [0, 0])[0], maps([2, 2], [3, 3])[0]])
    assert image_miou(pred, ref, 4).tolist() == pytest.approx([1.0, (2 / 4 + 0 / 2) / 2])


def test_an_image_every_snapshot_calls_background_is_perfectly_stable():
    bg = maps([0, 0], [0, 0])
    assert stability([bg, bg, bg], 21).item() == 1.0


def test_stability_compares_the_first_two_snapshots_with_the_last():
    m3 = maps([0, 1], [1, 1])
    m1 = m3.clone()                      # mIoU(M1, M3) = 1
    m2 = maps([0, 0], [1, 1])            # mIoU(M2, M3) = (1/2 + 2/3) / 2
    expected = 0.5 * (1.0 + (1 / 2 + 2 / 3) / 2)
    assert stability([m1, m2, m3], 4).item() == pytest.approx(expected)
    # the reference is the last snapshot: M1 against M2 would give another score
    assert stability([m1, m3, m2], 4).item() != pytest.approx(expected)


def test_the_split_takes_the_floor_of_half_and_keeps_ties_in_dataset_order():
    ids = ["a", "b", "c", "d", "e"]
    scores = torch.tensor([0.5, 0.9, 0.5, 0.5, 0.1])
    reliable, unreliable = reliable_split(ids, scores)
    assert reliable == ["b", "a"]          # ⌊5/2⌋ = 2; of the three 0.5s, "a" comes first
    assert unreliable == ["c", "d", "e"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=1, max_size=30))
def test_split_property_top_half_by_score_stably(values):
    ids = [f"i{k:02d}" for k in range(len(values))]
    reliable, unreliable = reliable_split(ids, torch.tensor(values))
    assert len(reliable) == len(values) // 2 and sorted(reliable + unreliable) == ids
    score = dict(zip(ids, values))
    if reliable and unreliable:
        assert min(score[i] for i in reliable) >= max(score[i] for i in unreliable)
    ranked = reliable + unreliable
    for a, b in zip(ranked, ranked[1:]):  # descending, equal scores in dataset order
        assert score[a] > score[b] or (score[a] == score[b] and a < b)


def test_snapshots_end_epochs_a_third_two_thirds_and_all_of_training():
    assert snapshot_iterations(1500, 12) == (41 * 12, 83 * 12, 1500)   # E = 125
    assert snapshot_iterations(80 * 91, 91) == (26 * 91, 53 * 91, 80 * 91)  # VOC: epochs 26, 53, 80
    with pytest.raises(UserError, match="at least 3"):
        snapshot_iterations(20, 12)


def test_cutout_sets_the_label_to_255_inside_its_box_only():
    image, mask = torch.full((3, 40, 50), 0.5), torch.ones(40, 50, dtype=torch.long)
    for seed in range(20):
        out, out_mask = cutout(image, mask, torch.Generator().manual_seed(seed), p=1.0)
        box = out_mask == 255
        assert box.any() and (out_mask[~box] == 1).all()
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert box.sum() == h * w                         # one rectangle, inside the image
        assert box.sum() <= 0.4 * 40 * 50
        assert (out[:, ~box] == 0.5).all()                # pixels outside the box are untouched
        inside = out[:, box] * 255
        assert (inside - inside.round()).abs().max() < 1e-4  # 8-bit noise inside it
    assert torch.equal(mask, torch.ones(40, 50, dtype=torch.long))  # inputs unchanged
    same, same_mask = cutout(image, mask, torch.Generator().manual_seed(0), p=0.0)
    assert torch.equal(same, image) and torch.equal(same_mask, mask)


def test_sda_is_drawn_from_the_global_generator_per_sample():
    image, mask = torch.rand(3, 16, 16), torch.zeros(16, 16, dtype=torch.long)
    torch.manual_seed(3)
    a = strong_augment(image, mask, 1.0, 0.0, 0.0, 1.0)
    torch.manual_seed(3)
    b = strong_augment(image, mask, 1.0, 0.0, 0.0, 1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and (a[1] == 255).any()


TINY_STAGED = {"data": {"batch_unlabeled": 0}, "optim": {"iters": 12},
               "plugins": {"st_plus_plus": {"tta_scales": [1.0, 2.0], "pass_batch": 4}},
               "stages": [{"name": "sup"}, {"name": "rel", "reads": ["sup"]},
                          {"name": "all", "reads": ["sup", "rel"]}]}


def test_st_plus_plus_end_to_end_on_a_tiny_recipe(tiny, tmp_path):
    folder = RunFolder(tmp_path)
    assert train_stages(tiny(TINY_STAGED), folder, train_built) == 0
    stages = tmp_path / "stages"
    # 8 labeled images in batches of 2: 4 iterations per epoch, E = 3: epochs 1, 2, 3
    assert sorted(p.name for p in (stages / "sup").glob("snapshot_*")) == [
        "snapshot_0000004.pt", "snapshot_0000008.pt", "snapshot_0000012.pt"]
    reliable = (stages / "sup" / "lists" / "reliable.txt").read_text().split()
    unreliable = (stages / "sup" / "lists" / "unreliable.txt").read_text().split()
    assert len(reliable) == 8 and len(unreliable) == 8  # ⌊16 / 2⌋ of the 16 unlabeled images
    assert written_ids(stages / "sup" / "labels" / "pseudo") == set(reliable)
    assert written_ids(stages / "rel" / "labels" / "pseudo") == set(unreliable)  # reliable not relabelled
    assert all((stages / s / "done.json").is_file() for s in ("sup", "rel", "all"))


def test_st_refuses_a_recipe_with_the_wrong_stages(tiny):
    from ssseg.plugin_manager import check_recipe

    recipe = tiny({**TINY_STAGED, "plugins": {"st": {}}})
    with pytest.raises(UserError, match=r"plugins.st: needs 2 stages"):
        check_recipe(recipe)
    recipe = tiny({**TINY_STAGED, "stages": [{"name": "a"}, {"name": "b"}, {"name": "c", "reads": ["b"]}]})
    with pytest.raises(UserError, match=r"stages\[1\].reads: .* set it to \['a'\]"):
        check_recipe(recipe)


def test_the_paper_recipe_runs_80_released_epochs_per_stage():
    """Each stage's optim.iters is 80 epochs of the released loader over its training set (batch
    16, drop_last): labeled; labeled × ⌈R/L⌉ + R reliable; labeled × ⌈U/L⌉ + U (split 732)."""
    from pathlib import Path

    from ssseg.data.splits import load_split, shipped_split_dir
    from ssseg.plugin_manager import check_recipe
    from ssseg.recipe.load import load_recipe
    from ssseg.stages.runner import stages_of

    recipe = load_recipe(Path(__file__).parents[2] / "recipes/paper/st_plus_plus_voc_classic.yaml")
    check_recipe(recipe)
    lists = load_split(shipped_split_dir("pascal"), recipe.data.split)
    n_l, n_u = len(lists.labeled), len(lists.unlabeled)
    sets = [n_l, n_l * -(-(n_u // 2) // n_l) + n_u // 2, n_l * -(-n_u // n_l) + n_u]
    stages = stages_of(recipe, Path("/nonexistent"))
    assert [s.recipe.optim.iters for s in stages] == [80 * (n // 16) for n in sets]
    assert snapshot_iterations(stages[0].recipe.optim.iters, n_l // 16) == (26 * 45, 53 * 45, 80 * 45)
