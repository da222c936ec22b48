"""The output folder is checked before anything is built; a resumed run continues with the
folder's own recipe, and metrics.jsonl holds each iteration once."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest
import yaml

from support.recipes import tiny_recipe_dict
from support.disk_faults import fail_writes
from ssseg.cli import main
from ssseg.engine import checkpoint, run as run_module

SUPERVISED = {"data": {"batch_unlabeled": 0}, "plugins": {"supervised": {}}}


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict({**SUPERVISED, "optim": {"iters": 2}})))
    return path


@pytest.fixture
def nothing_built(monkeypatch):
    """Fails the test if a run is built (the folder must be refused before)."""
    def build_run(*args, **kwargs):
        raise AssertionError("data and model were built before the output folder was checked")
    monkeypatch.setattr(run_module, "build_run", build_run)


def train_records(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["iteration"] for r in records if r["event"] == "train"]


def refused(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1, err


def test_out_naming_a_file_is_refused_before_anything_is_built(tmp_path, recipe, capsys, nothing_built):
    (tmp_path / "taken").write_text("")
    refused(capsys, ["train", str(recipe), "--out", str(tmp_path / "taken")], "is a file, not a folder")
    refused(capsys, ["train", str(recipe), "--out", str(tmp_path / "taken" / "run")],
            "cannot write in the output folder")


def test_a_read_only_folder_is_refused_before_anything_is_built(tmp_path, recipe, capsys, monkeypatch,
                                                                nothing_built):
    fail_writes(monkeypatch, tmp_path / "run", errno.EROFS)
    (tmp_path / "run").mkdir()
    refused(capsys, ["train", str(recipe), "--out", str(tmp_path / "run")], "(Read-only file system)")


def test_a_partial_run_of_another_recipe_is_refused(tmp_path, recipe, capsys, nothing_built):
    out = tmp_path / "run"
    out.mkdir()
    (out / "recipe.yaml").write_text(yaml.safe_dump(tiny_recipe_dict({**SUPERVISED, "seed": 5})))
    (out / "metrics.jsonl").write_text('{"iteration": 1, "event": "train", "loss": 1.0}\n')
    refused(capsys, ["train", str(recipe), "--out", str(out)],
            "holds a partial run (no checkpoint yet) of another recipe (seed: 5 in its recipe.yaml, 0 in the "
            "recipe)")
    (out / "recipe.yaml").unlink()
    refused(capsys, ["train", str(recipe), "--out", str(out)], "(no readable recipe.yaml)")


def test_a_partial_run_of_the_same_recipe_starts_over_with_fresh_metrics(tmp_path, recipe):
    out = tmp_path / "run"
    out.mkdir()
    (out / "recipe.yaml").write_text(recipe.read_text())
    (out / "metrics.jsonl").write_text('{"iteration": 1, "event": "train", "loss": 9.0}\n{"itera')
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    assert train_records(out) == [1, 2]


def test_resume_continues_with_the_run_folders_recipe_and_logs_each_iteration_once(tmp_path, recipe, capsys):
    out = str(tmp_path / "run")
    assert main(["train", str(recipe), "--out", out, "-o", "optim.lr=3e-3", "-o", "run.checkpoint_every=1"]) == 0
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:  # what a run killed after its checkpoint leaves
        f.write('{"iteration": 3, "event": "train", "loss": 1.0}\n{"iteration": 3, "ev')
    # without repeating -o optim.lr: the folder's recipe is the truth; the schedule may grow
    assert main(["train", str(recipe), "--out", out, "--resume", "-o", "optim.iters=4"]) == 0
    saved = checkpoint.read(tmp_path / "run" / "last.pt")["recipe"]
    assert saved["optim"]["lr"] == 0.003 and saved["optim"]["iters"] == 4 and saved["run"]["checkpoint_every"] == 1
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["optim"]["iters"] == 4
    assert train_records(tmp_path / "run") == [1, 2, 3, 4]
    capsys.readouterr()
    refused(capsys, ["train", str(recipe), "--out", out, "--resume", "-o", "data.crop=16"],
            "--resume: a resumed run may change only optim.iters, optim.lr, optim.clip_grad, eval.* and run.* "
            "(data.crop: 32 in "
            "recipe.yaml, 16 with -o)")


@pytest.mark.slow
def test_the_folder_is_checked_before_torch_is_imported(tmp_path, recipe):
    """So the answer is immediate, and Ctrl-C at any point of start-up meets ssseg's handler."""
    (tmp_path / "taken").write_text("")
    code = ("import sys; from ssseg.cli import main; "
            f"code = main(['train', {str(recipe)!r}, '--out', {str(tmp_path / 'taken')!r}]); "
            "sys.exit(10 + code if 'torch' in sys.modules else code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
