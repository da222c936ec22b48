"""Short real runs on the embedded data through the CLI and the trainer; resume."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from support import recorder
from support.recipes import tiny_recipe_dict
from ssseg.cli import main
from ssseg.engine import checkpoint
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.errors import UserError


def write_recipe(tmp_path, patch=None):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(patch)))
    return path


SUPERVISED = {"data": {"batch_unlabeled": 0}, "plugins": {"supervised": {}}}


def test_cli_train_writes_results_and_prints_miou(tmp_path, capsys):
    recipe = write_recipe(tmp_path, {**SUPERVISED, "optim": {"iters": 3}, "eval": {"every": 2}})
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "val mIoU at iteration 3: student" in out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["event"] == "train"] == [1, 2, 3]
    assert [r["iteration"] for r in records if r["event"] == "eval"] == [2, 3]
    assert 0 <= records[-1]["student/miou"] <= 1
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["optim"]["iters"] == 3 and saved["plugins"] == {"supervised": {}}
    assert (tmp_path / "run" / "last.pt").is_file()


def test_cli_refuses_to_overwrite_a_run(tmp_path, capsys):
    recipe = write_recipe(tmp_path, {**SUPERVISED, "optim": {"iters": 1}})
    out = str(tmp_path / "run")
    assert main(["train", str(recipe), "--out", out]) == 0
    before = (tmp_path / "run" / "last.pt").read_bytes()
    assert main(["train", str(recipe), "--out", out]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["train", "missing.yaml"], "missing.yaml: recipe file not found"),
    (["train", "{recipe}", "-o", "optim.iters=0"], "optim.iters: 0 must be > 0"),
    (["train", "{recipe}", "-o", "plugins.supervisd={{}}"], "unknown plugin 'supervisd'; did you mean 'supervised'"),
    (["train", "{recipe}", "-o", "plugins.supervised.x=1"], "plugins.supervised.x: unknown key"),
    (["eval", "{recipe}", "--checkpoint", "nope.pt"], "checkpoint not found: nope.pt"),
    (["train", "{recipe}", "-o", "data.batch_unlabeled=2"], "set data.batch_unlabeled: 0"),
    (["train", "{recipe}", "-o", "data.dataset=coco"], "data.dataset: unknown dataset 'coco'; valid: cityscapes,"),
    (["train", "{recipe}", "-o", "data.crop=100000"], "data.crop: 100000 is out of range; valid: [1, 4096]"),
    pytest.param(["train", "{recipe}", "-o", "run.device=cuda"], "run.device: 'cuda', but torch sees 0 CUDA",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_user_errors_exit_2_with_a_message_and_no_traceback(tmp_path, capsys, argv, message):
    recipe = write_recipe(tmp_path, SUPERVISED)
    argv = [a.format(recipe=recipe) for a in argv]
    assert main(argv + (["--out", str(tmp_path / "o")] if argv[0] == "train" else [])) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_resume_after_interruption_ends_with_the_same_weights(tmp_path, tiny):
    patch = {"optim": {"iters": 4}, "run": {"checkpoint_every": 2}}
    reference = Trainer(build_run(tiny(patch)))
    reference.train()

    recorder.Interrupt.fired.clear()
    interrupted = tiny({**patch, "plugins": {"stop": {"use": "support.recorder:Interrupt", "at": 3}}})
    path = tmp_path / "last.pt"
    first = Trainer(build_run(interrupted), checkpointer=checkpoint.Checkpointer(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert checkpoint.read(path)["iteration"] == 2

    resumed = Trainer(build_run(interrupted))
    checkpoint.restore(resumed, path)
    assert resumed.run.iteration == 2
    resumed.train()
    assert resumed.run.iteration == 4
    for (name, a), b in zip(reference.run.student.state_dict().items(), resumed.run.student.state_dict().values()):
        assert torch.equal(a, b), name


def test_cli_resume_continues_from_the_saved_iteration(tmp_path, capsys):
    recipe = write_recipe(tmp_path, {**SUPERVISED, "optim": {"iters": 2}})
    out = str(tmp_path / "run")
    assert main(["train", str(recipe), "--out", out]) == 0
    assert main(["train", str(recipe), "--out", out, "--resume", "-o", "optim.iters=3"]) == 0
    captured = capsys.readouterr()
    assert "resumed from" in captured.err and "at iteration 2" in captured.err
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["event"] == "train"] == [1, 2, 3]


@pytest.mark.parametrize("patch, message", [
    ({"model": {"options": {"decoder_channels": [8, 8, 8]}}}, "model.options"),
    ({"seed": 3}, "seed: 0 in the checkpoint, 3 in the recipe"),
    ({"plugins": {"x": {"use": "support.recorder:Observer"}}}, "plugins:"),
])
def test_resume_refuses_a_checkpoint_of_another_recipe(tmp_path, tiny, patch, message):
    trainer = Trainer(build_run(tiny({"optim": {"iters": 1}})), checkpointer=checkpoint.Checkpointer(tmp_path))
    trainer.train()
    other = Trainer(build_run(tiny(patch)))
    with pytest.raises(UserError, match=f"was written by a different recipe .*{message}"):
        checkpoint.restore(other, tmp_path / "last.pt")


def test_resume_may_extend_the_schedule(tmp_path, tiny):
    Trainer(build_run(tiny({"optim": {"iters": 1}})), checkpointer=checkpoint.Checkpointer(tmp_path)).train()
    longer = Trainer(build_run(tiny({"optim": {"iters": 2}, "eval": {"every": 1}})))
    checkpoint.restore(longer, tmp_path / "last.pt")
    assert longer.run.iteration == 1


def test_explain_prints_the_hook_table(tmp_path, capsys):
    recipe = write_recipe(tmp_path, SUPERVISED)
    assert main(["explain", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "validate                 observer      supervised" in out
    assert "plan_views               decision      (core default)" in out
    assert "build_teacher            decision      (core default)" in out
    assert "# resolved recipe" in out


def test_plugins_lists_first_party_plugins(capsys):
    assert main(["plugins"]) == 0
    assert any(line.startswith("supervised") and "ssseg" in line and "validate" in line
               for line in capsys.readouterr().out.splitlines())


def test_auxiliary_head_adds_its_weighted_supervised_loss(tiny):
    trainer = Trainer(build_run(tiny({**SUPERVISED, "model": {"aux_head": True, "aux_weight": 0.4}})))
    logs = trainer.step(*next(trainer.batches())).logs
    assert logs["loss"] == pytest.approx(logs["loss_x"] + 0.4 * logs["loss_x/aux"], rel=1e-5)


def test_eval_every_epochs_evaluates_at_each_epoch_end_and_records_the_best(tmp_path, tiny):
    ipe = Trainer(build_run(tiny())).feed.iters_per_epoch
    trainer = Trainer(build_run(tiny({"optim": {"iters": 2 * ipe + 1}, "eval": {"every": 1, "every_epochs": 1}}),
                                tmp_path))
    trainer.train()
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "eval"]
    assert [e["iteration"] for e in evals] == [ipe, 2 * ipe, 2 * ipe + 1]
    for k, e in enumerate(evals):
        best = max(evals[: k + 1], key=lambda r: (r["student/miou"], -r["iteration"]))
        assert (e["student/best_miou"], e["student/best_iteration"]) == (best["student/miou"], best["iteration"])
    assert trainer.run.state.best["student"] == {"miou": evals[-1]["student/best_miou"],
                                             "iteration": evals[-1]["student/best_iteration"]}
