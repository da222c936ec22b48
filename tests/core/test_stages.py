"""Staged training (ssseg/stages): recipe stages, the stage hooks in order, pseudo-label sets
written atomically and resumably, finished stages skipped, and clear errors for bad input."""

from __future__ import annotations

import pytest
import torch

from ssseg import files
from ssseg.cli import train_built
from ssseg.data.registry import build_data
from ssseg.engine.run_folder import RunFolder
from ssseg.errors import UserError
from ssseg.recipe.structure import ConfigError
from ssseg.stages import label_store
from ssseg.stages.dataset_pass import DatasetPass
from ssseg.stages.runner import stages_of, train_stages
from ssseg.stages.training_set import compose
from ssseg.stages.types import TrainingSet
from support import stage_plugins

LABELLER = {"use": "support.stage_plugins:Labeller"}
STAGED = {"data": {"batch_unlabeled": 0}, "optim": {"iters": 2},
          "plugins": {"labeller": LABELLER},
          "stages": [{"name": "first"}, {"name": "second", "reads": ["first"]}]}


@pytest.fixture(autouse=True)
def _clear():
    stage_plugins.CALLS.clear()


def test_stages_read_only_earlier_stages_with_unique_names(tiny):
    with pytest.raises(ConfigError, match=r"stages\[1\]: reads 'later', which is not an earlier stage; valid: a"):
        tiny({"stages": [{"name": "a"}, {"name": "b", "reads": ["later"]}, {"name": "later"}]})
    with pytest.raises(ConfigError, match=r"stages\[1\]: name 'a' appears twice"):
        tiny({"stages": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match=r"stages\[0\]: patch: 'seed' cannot change per stage"):
        tiny({"stages": [{"name": "a", "patch": {"seed": 3}}]})


def test_a_stage_patch_is_checked_before_the_first_stage_trains(tiny, tmp_path):
    recipe = tiny({**STAGED, "stages": [{"name": "first"}, {"name": "second", "reads": ["first"],
                                                              "patch": {"optim": {"itres": 3}}}]})
    with pytest.raises(ConfigError, match=r"stages\[1\] \(second\): optim.itres: unknown key"):
        stages_of(recipe, tmp_path)
    assert not (tmp_path / "stages").exists()


def test_stages_train_in_order_and_a_finished_stage_is_skipped_on_rerun(tiny, tmp_path):
    recipe = tiny(STAGED)
    assert train_stages(recipe, RunFolder(tmp_path), train_built) == 0
    assert stage_plugins.CALLS == ["stage_training_set:first", "stage_snapshots:first", "step", "step",
                                   "after_stage:first", "stage_training_set:second",
                                   "stage_snapshots:second", "step", "step", "after_stage:second"]
    first = tmp_path / "stages" / "first"
    assert (first / "snapshot_0000001.pt").is_file() and (first / "done.json").is_file()
    assert len(label_store.written_ids(first / "labels" / "pseudo")) == 16
    stage_plugins.CALLS.clear()
    assert train_stages(recipe, RunFolder(tmp_path), train_built) == 0
    assert stage_plugins.CALLS == []  # nothing trained, passed or labelled again


def test_a_killed_pass_resumes_without_redoing_finished_images(tiny, tmp_path, monkeypatch):
    recipe = tiny(STAGED)
    written = []
    real_write = label_store.write_label

    def killed_after_five(folder, image_id, labels):
        if len(written) == 5:
            raise KeyboardInterrupt
        written.append(image_id)
        real_write(folder, image_id, labels)

    monkeypatch.setattr("ssseg.stages.dataset_pass.write_label", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        train_stages(recipe, RunFolder(tmp_path), train_built)
    labels = tmp_path / "stages" / "first" / "labels" / "pseudo"
    assert len(label_store.written_ids(labels)) == 5
    assert not (tmp_path / "stages" / "first" / "done.json").exists()
    leftover = files.temporary(label_store.label_path(labels, "train_99999"))
    leftover.write_bytes(b"half a png")  # what a kill inside a write leaves
    monkeypatch.setattr("ssseg.stages.dataset_pass.write_label", real_write)
    stage_plugins.CALLS.clear()
    again = []
    monkeypatch.setattr("ssseg.stages.dataset_pass.write_label",
                        lambda folder, image_id, lab: (again.append(image_id), real_write(folder, image_id, lab)))
    assert train_stages(recipe, RunFolder(tmp_path), train_built) == 0
    # the first stage's finished training is not redone: only its pass, then the second stage
    assert stage_plugins.CALLS == ["stage_training_set:first", "stage_snapshots:first", "after_stage:first",
                                   "stage_training_set:second", "stage_snapshots:second", "step", "step",
                                   "after_stage:second"]
    assert len(again) == 11 and not set(again) & set(written)  # only the 11 missing images
    assert len(label_store.written_ids(labels)) == 16 and not leftover.exists()


def test_pseudo_label_files_are_png_label_maps_and_damage_is_named(tmp_path):
    label_store.write_label(tmp_path, "img_1", torch.tensor([[0, 1], [255, 3]]))
    assert torch.equal(label_store.read_label(tmp_path, "img_1", (2, 2)), torch.tensor([[0, 1], [255, 3]]))
    (tmp_path / "img_2.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=r"damaged pseudo-label file .*img_2.png"):
        label_store.read_label(tmp_path, "img_2")
    with pytest.raises(UserError, match=r"img_1.png is 2x2, but its image is 4x4"):
        label_store.read_label(tmp_path, "img_1", (4, 4))
    with pytest.raises(UserError, match=r"pseudo-label file missing: .*img_3.png"):
        label_store.read_label(tmp_path, "img_3")


def test_the_training_set_repeats_the_labeled_list_and_augments_pseudo_labels_only(tiny, tmp_path):
    recipe = tiny({"data": {"batch_unlabeled": 0}})
    data = build_data(recipe.data)
    folder = tmp_path / "first" / "labels" / "pseudo"
    ids = [data.unlabeled.image_id(i) for i in range(len(data.unlabeled))]
    for image_id in ids:
        label_store.write_label(folder, image_id, torch.full((32, 32), 2))

    def mark(image, mask):
        return image * 0, mask

    composed = compose(data, TrainingSet(label_sets=("first/pseudo",), augment=mark), tmp_path, ("first",))
    assert len(composed.labeled) == 8 * 2 + 16  # ⌈16 / 8⌉ copies of the 8 labeled images
    samples = [composed.labeled[i] for i in range(len(composed.labeled))]
    assert all(s["image"].any() for s in samples[:16])           # labeled: not augmented
    assert all(not s["image"].any() and (s["mask"] == 2).all() for s in samples[16:])
    with pytest.raises(UserError, match=r"set 'other/pseudo': give '<stage>/<set>' with a stage this "
                                        r"stage reads \(first\)"):
        compose(data, TrainingSet(label_sets=("other/pseudo",)), tmp_path, ("first",))
    (folder / f"{ids[0]}.png").write_bytes(b"broken")
    with pytest.raises(UserError, match=rf"damaged pseudo-label file .*{ids[0]}.png"):
        compose(data, TrainingSet(label_sets=("first/pseudo",)), tmp_path, ("first",))


def test_the_pass_names_unreadable_stages_and_missing_checkpoints(tiny, tmp_path):
    recipe = tiny(STAGED)
    stage = stages_of(recipe, tmp_path)[1]
    data = build_data(stage.recipe.data)
    dataset_pass = DatasetPass(stage=stage, unlabeled=data.unlabeled, num_classes=4, device=torch.device("cpu"))
    with pytest.raises(UserError, match=r"stage 'second' cannot read stage 'third'; valid: second, first"):
        dataset_pass.checkpoint("third")
    with pytest.raises(UserError, match=r"checkpoint not found: .*first/snapshot_0000007.pt; stage 'first' "
                                        r"has no checkpoints"):
        dataset_pass.checkpoint("first", 7)
