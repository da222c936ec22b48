"""A diverged run stops cleanly and keeps only finite checkpoints; its message gives the command
that continues from the last good one with a lower learning rate, and that command works;
non-finite weights are never evaluated, exported or resumed; ``run.on_nonfinite: skip`` survives
a skipped logging step and a run where every step is skipped."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import torch
import yaml

from support.recipes import tiny_recipe_dict
from ssseg.cli import main
from ssseg.engine import checkpoint
from ssseg.engine.checkpoint import NonFiniteWeights
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer


def write(tmp_path, patch):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(patch)))
    return path


def records(out, event="train"):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["event"] == event]


def test_divergence_names_the_restart_command_and_that_command_finishes_the_run(tmp_path, capsys):
    recipe = write(tmp_path, {"optim": {"iters": 4, "lr": 1.0}, "run": {"checkpoint_every": 1},
                              "plugins": {"fixmatch": {}, "nan": {"use": "support.recorder:NaNAt", "at": 2, "above_lr": 0.5}}})
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "iteration 2: non-finite loss in poison" in err
    assert checkpoint.read(out / "last.pt")["iteration"] == 2
    command = re.search(r"continue from it with a lower learning rate: (ssseg train .*? -o optim\.lr=0\.1) ", err)[1]
    assert main(shlex.split(command)[1:]) == 0
    assert [r["iteration"] for r in records(out)] == [1, 2, 3, 4]
    resumed = records(out)[2:]
    assert all(r["lr"] < 0.1 and r["loss"] == r["loss"] for r in resumed)  # the new rate, finite losses
    assert checkpoint.read(out / "last.pt")["recipe"]["optim"]["lr"] == 0.1


def test_a_checkpoint_is_written_only_from_finite_tensors_buffers_included(tmp_path, tiny):
    trainer = Trainer(build_run(tiny({"optim": {"iters": 1}})), checkpointer=checkpoint.Checkpointer(tmp_path))
    trainer.train()
    before = (tmp_path / "last.pt").read_bytes()
    bn = next(m for m in trainer.run.student.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var.fill_(float("inf"))
    with pytest.raises(NonFiniteWeights, match=r"iteration 1: not writing a checkpoint: \d+ tensors? "
                                              r"\(student\.net\.encoder\.\w+\.running_var"):
        trainer.checkpointer.save(trainer.run, trainer.plugins)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def poisoned_checkpoint(tmp_path, tiny_patch=None):
    """A real checkpoint whose student's first convolution holds a NaN (written by hand)."""
    recipe = write(tmp_path, tiny_patch or {"optim": {"iters": 1}})
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 0
    state = checkpoint.read(tmp_path / "run" / "last.pt")
    state["student"]["net.encoder.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    return recipe, tmp_path / "nan.pt"


@pytest.mark.parametrize("command", ["eval", "export", "predict"])
def test_eval_export_and_predict_refuse_non_finite_weights_naming_them(tmp_path, capsys, command):
    recipe, bad = poisoned_checkpoint(tmp_path)
    capsys.readouterr()
    image = tmp_path / "image.png"
    from PIL import Image
    Image.new("RGB", (32, 32)).save(image)
    argv = {"eval": ["eval", str(recipe), "--checkpoint", str(bad)],
            "export": ["export", str(recipe), "--checkpoint", str(bad), "--out", str(tmp_path / "m.pt")],
            "predict": ["predict", str(recipe), "--checkpoint", str(bad), str(image), "--out", str(tmp_path / "p")]}
    assert main(argv[command]) == 2
    err = capsys.readouterr().err
    assert f"{bad} holds non-finite weights: 1 tensor (student.net.encoder.conv1.weight)" in err
    assert "Traceback" not in err and not (tmp_path / "m.pt").exists()


def crafted(tmp_path, change):
    """A run folder whose last.pt was changed by ``change(state)``."""
    recipe = write(tmp_path, {"optim": {"iters": 2}, "run": {"checkpoint_every": 1},
                              "plugins": {"mean_teacher": {}, "fixmatch": {}}})
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    state = checkpoint.read(out / "last.pt")
    change(state)
    torch.save(state, out / "last.pt")
    return recipe, out


def set_training(key, value):
    def change(state):
        state["training"][key] = value
        if key == "iteration":
            state["iteration"] = value
    return change


def reshape_momentum(state):
    first = next(iter(state["optimizer"]["state"]))
    entry = state["optimizer"]["state"][first]
    key = next(k for k, v in entry.items() if isinstance(v, torch.Tensor) and v.dim() > 0)
    entry[key] = torch.zeros(3)


@pytest.mark.parametrize("change, message", [
    (set_training("iteration", -5), "its iteration -5 is not a whole number between 0 and optim.iters (3)"),
    (set_training("iteration", 10**9), "its iteration 1000000000 is not a whole number between 0 and optim.iters"),
    (set_training("best", [1, 2]), "its best is not a mapping of model -> {miou: number, iteration: whole number}"),
    (lambda s: s.__setitem__("hookspec_version", 999), "it was written by a newer ssseg (hook spec version 999"),
    (reshape_momentum, "has shape [3], the parameter"),
])
def test_resume_validates_the_checkpoint_s_contents(tmp_path, capsys, change, message):
    recipe, out = crafted(tmp_path, change)
    capsys.readouterr()
    assert main(["train", str(recipe), "--out", str(out), "--resume", "-o", "optim.iters=3"]) == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {out / 'last.pt'}: " in err and message in err and "Traceback" not in err


@pytest.mark.parametrize("patch", [{"at": 1}, {"every_step": True}])
def test_skip_survives_a_skipped_logging_step_and_every_step_skipped(tmp_path, capsys, patch):
    recipe = write(tmp_path, {"optim": {"iters": 3}, "run": {"on_nonfinite": "skip", "log_every": 1},
                              "plugins": {"fixmatch": {}, "nan": {"use": "support.recorder:NaNAt", **patch}}})
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "skipped (non-finite loss)" in err
    logged = records(tmp_path / "run")
    skipped = [r["iteration"] for r in logged if r.get("skipped")]
    assert skipped == ([2] if "at" in patch else [1, 2, 3]) and logged[-1]["skipped_steps"] == len(skipped)
