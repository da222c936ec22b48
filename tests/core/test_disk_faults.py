"""Writes that fail (a full or read-only disk, a kill, Ctrl-C) leave the previous file and no
temporary one, and never block the next write."""

from __future__ import annotations

import errno

import pytest
import yaml

from support.recipes import tiny_recipe_dict
from support.disk_faults import fail_writes
from ssseg import files
from ssseg.cli import main
from ssseg.engine import checkpoint
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.files import WriteError

SUPERVISED = {"data": {"batch_unlabeled": 0}, "plugins": {"supervised": {}}}


def test_a_full_disk_leaves_the_previous_recipe_not_an_empty_one(tmp_path, monkeypatch):
    path = tmp_path / "recipe.yaml"
    files.write_text(path, "seed: 1\n")
    fail_writes(monkeypatch, tmp_path)
    with pytest.raises(WriteError, match="no space left on .* the previous recipe.yaml is unchanged"):
        files.write_text(path, "seed: 2\n")
    assert path.read_text() == "seed: 1\n" and not files.temporary(path).exists()


def test_ctrl_c_during_a_write_removes_the_temporary_file_and_stays_a_ctrl_c(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    path.write_bytes(b"good")

    def interrupted(file):
        file.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_atomically(path, interrupted)
    assert path.read_bytes() == b"good" and not files.temporary(path).exists()


def test_leftover_temporary_files_of_a_killed_save_do_not_block_later_saves(tmp_path, tiny):
    for name in ("last.pt.tmp", "best.pt.tmp", "iter_0000001.pt.tmp", "iter_0000002.pt.tmp"):
        (tmp_path / name).write_bytes(b"left by a kill between link and replace")
    recipe = tiny({"optim": {"iters": 2}, "eval": {"every": 1},
                   "run": {"checkpoint_every": 1, "keep_checkpoints": 2}})
    Trainer(build_run(recipe), checkpointer=checkpoint.Checkpointer(tmp_path, keep=2)).train()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "iter_0000001.pt", "iter_0000002.pt",
                                                           "last.pt"]
    assert checkpoint.read(tmp_path / "iter_0000002.pt")["iteration"] == 2


@pytest.mark.parametrize("code, message", [
    (errno.ENOSPC, "ssseg: error: cannot write in the output folder {out} (No space left on device)"),
    (errno.EROFS, "ssseg: error: cannot write in the output folder {out} (Read-only file system)"),
])
def test_train_on_a_full_or_read_only_disk_says_so_in_one_line(tmp_path, capsys, monkeypatch, code, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({**SUPERVISED, "optim": {"iters": 1}})))
    out = tmp_path / "run"
    out.mkdir()
    fail_writes(monkeypatch, out, code)
    assert main(["train", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(out=out)) and len(err.splitlines()) == 1
    assert not (out / "recipe.yaml").exists() and not list(out.glob("*.tmp"))
