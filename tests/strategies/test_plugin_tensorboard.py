"""The tensorboard plugin: event files read back (scalars per step, per-class IoU, the prediction
grid), resume without duplicated steps, rank 0 and run folders only, the missing-extra message,
and ``ssseg train --tensorboard``."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
import yaml

from support.recipes import tiny_recipe_dict
from ssseg.cli import main
from ssseg.engine.checkpoint import Checkpointer, restore
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.errors import UserError
from ssseg.plugin_manager import instantiate
from ssseg.pictures import CELL, LINE

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402

TEACHER = {"mean_teacher": {}, "fixmatch": {}}


def read_events(folder):
    """Every scalar tag's (step, value) pairs and the image events, as TensorBoard shows them."""
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return scalars, {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def records(out, event):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_event_files_hold_the_training_scalars_every_evaluation_and_the_grid(tmp_path, tiny):
    patch = {"optim": {"iters": 4}, "eval": {"every": 2, "max_images": 2}}
    out = tmp_path / "run"
    Trainer(build_run(tiny({**patch, "plugins": {**TEACHER, "tensorboard": {"images": 2}}}), out)).train()
    scalars, images = read_events(out / "tensorboard")

    for record in records(out, "train"):  # every training scalar, at the step metrics.jsonl has it
        for key in ("loss", "loss_x", "loss_u/strong", "lr", "lambda_u", "ema_decay"):
            assert (record["iteration"], pytest.approx(record[key])) in scalars[f"train/{key}"], key
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    evals = records(out, "eval")
    assert [r["iteration"] for r in evals] == [2, 4]
    for model in ("student", "teacher"):
        assert scalars[f"eval/{model}/miou"] == [(r["iteration"], pytest.approx(r[f"{model}/miou"])) for r in evals]
        for name in ("background", "disc", "cross", "ring"):
            assert scalars[f"iou/{model}/{name}"] == [(r["iteration"], pytest.approx(r[f"{model}/iou"][name]))
                                                      for r in evals]
    grids = images["predictions"]
    assert [g.step for g in grids] == [2, 4]
    # columns image | ground truth | student | teacher, 2 rows, each cell CELL high, and one row of
    # class colours below (see ssseg.pictures.grid)
    assert (grids[0].width, grids[0].height) == (4 * (CELL + 4), 16 + 2 * (CELL + 4) + LINE + 4)


def test_logging_does_not_change_the_training(tmp_path, tiny):
    """The grid's predictions run in eval mode: no BatchNorm statistics move, no RNG is drawn."""
    patch = {"optim": {"iters": 2}, "eval": {"every": 1, "max_images": 1}, "data": {"batch_unlabeled": 0}}
    logged = Trainer(build_run(tiny({**patch, "plugins": {"tensorboard": {"images": 2}}}), tmp_path / "run"))
    logged.train()
    plain = Trainer(build_run(tiny(patch)))
    plain.train()
    for (name, a), b in zip(plain.run.student.state_dict().items(), logged.run.student.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_resumed_run_purges_the_steps_it_trains_again(tmp_path, tiny):
    recipe = tiny({"optim": {"iters": 3}, "eval": {"every": 1, "max_images": 1}, "data": {"batch_unlabeled": 0},
                   "plugins": {"tensorboard": {"images": 0}}})
    out = tmp_path / "run"
    Trainer(build_run(recipe, out), checkpointer=Checkpointer(out, 3)).train()  # wrote steps 2, 3 too
    first_files = set((out / "tensorboard").iterdir())
    resumed = Trainer(build_run(recipe, out))
    restore(resumed, out / "iter_0000001.pt")
    resumed.train()

    (new_file,) = set((out / "tensorboard").iterdir()) - first_files
    starts = [e.step for e in EventFileLoader(str(new_file)).Load() if e.HasField("session_log")]
    assert starts == [2]  # TensorBoard drops every earlier event from step 2 on
    scalars, _ = read_events(out / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3]
    assert [s for s, _ in scalars["eval/student/miou"]] == [1, 2, 3]


@pytest.mark.parametrize("out_dir, is_main", [(None, True), ("run", False)])
def test_nothing_is_written_without_a_run_folder_or_off_rank_0(tmp_path, out_dir, is_main):
    plugin = instantiate("tensorboard", {})
    run = types.SimpleNamespace(out_dir=out_dir and tmp_path / out_dir, is_main=is_main)
    plugin.setup(run=run)
    plugin.after_iteration(ctx=types.SimpleNamespace(iteration=0, max_iters=1), logs={"loss": 1.0})
    plugin.after_eval(run=run, metrics={"iteration": 1, "student/miou": 0.5}, models={})
    assert list(tmp_path.iterdir()) == []


def test_a_missing_tensorboard_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if absent
    plugin = instantiate("tensorboard", {})
    plugin.recipe_key = "tb"
    with pytest.raises(UserError, match=r"plugins.tb: the tensorboard package is not installed; "
                                        r"pip install 'ssseg\[tensorboard\]'"):
        plugin.setup(run=types.SimpleNamespace(out_dir=tmp_path, is_main=False))


def test_cli_flag_adds_the_plugin(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"data": {"batch_unlabeled": 0}, "optim": {"iters": 1}})))
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out), "--tensorboard"]) == 0
    assert yaml.safe_load((out / "recipe.yaml").read_text())["plugins"] == {"tensorboard": {}}
    scalars, images = read_events(out / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == [1] and [g.step for g in images["predictions"]] == [1]
