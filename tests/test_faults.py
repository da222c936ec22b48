"""A trainer that survives faults: signals, kills, interrupted checkpoint writes, NaN losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_recipe_dict
from ssseg.engine import checkpoint
from ssseg.engine.run import build_run
from ssseg.engine.trainer import NonFiniteLoss, Stopped, Trainer

TESTS = Path(__file__).parent


def write_recipe(path: Path, patch) -> Path:
    path.write_text(yaml.safe_dump(tiny_recipe_dict(patch)))
    return path


def start_training(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ssseg", "train", str(recipe), "--out", str(out), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def iterations_logged(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    return max((json.loads(line)["iteration"] for line in path.read_text().splitlines()), default=0)


SLOW = {"optim": {"iters": 8}, "run": {"checkpoint_every": 2},
        "plugins": {"slow": {"use": "recorder:Slow", "seconds": 0.15}}}


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", SLOW)
    proc = start_training(recipe, tmp_path / "run")
    wait_for(lambda: iterations_logged(tmp_path / "run") >= 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "--resume" in err and "Traceback" not in err
    saved = checkpoint.read(tmp_path / "run" / "last.pt")["iteration"]
    assert saved == iterations_logged(tmp_path / "run") and 1 <= saved < 8


def test_sigkill_then_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", SLOW)
    reference = start_training(recipe, tmp_path / "ref")
    killed = start_training(recipe, tmp_path / "killed")
    wait_for(lambda: (tmp_path / "killed" / "last.pt").exists() and iterations_logged(tmp_path / "killed") >= 3)
    killed.kill()
    killed.wait()
    assert reference.wait(timeout=120) == 0
    resumed = start_training(recipe, tmp_path / "killed", "--resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    a = checkpoint.read(tmp_path / "ref" / "last.pt")
    b = checkpoint.read(tmp_path / "killed" / "last.pt")
    assert a["iteration"] == b["iteration"] == 8
    for name, tensor in a["student"].items():
        assert torch.equal(tensor, b["student"][name]), name


def test_a_failed_checkpoint_write_leaves_the_previous_one_loadable(tmp_path, tiny, monkeypatch):
    trainer = Trainer(build_run(tiny({"optim": {"iters": 1}})), checkpointer=checkpoint.Checkpointer(tmp_path))
    trainer.train()
    real_save = torch.save

    def dying_save(obj, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    trainer.run.iteration = 5
    with pytest.raises(OSError):
        trainer.checkpointer.save(trainer)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert checkpoint.read(tmp_path / "last.pt")["iteration"] == 1


def test_keeps_the_last_k_iteration_checkpoints_and_the_best(tmp_path, tiny):
    recipe = tiny({"optim": {"iters": 4}, "eval": {"every": 1},
                   "run": {"checkpoint_every": 1, "keep_checkpoints": 2}})
    trainer = Trainer(build_run(recipe), checkpointer=checkpoint.Checkpointer(tmp_path, keep=2))
    trainer.train()
    assert sorted(p.name for p in tmp_path.glob("iter_*.pt")) == ["iter_0000003.pt", "iter_0000004.pt"]
    best = checkpoint.read(tmp_path / "best.pt")
    assert best["last_eval"]["student/miou"] == pytest.approx(trainer.best)


def test_nan_loss_stops_naming_the_iteration_and_the_term(tmp_path, tiny):
    recipe = tiny({"optim": {"iters": 3}, "run": {"checkpoint_every": 1},
                   "plugins": {"nan": {"use": "recorder:NaNAt", "at": 1}}})
    trainer = Trainer(build_run(recipe), checkpointer=checkpoint.Checkpointer(tmp_path))
    with pytest.raises(NonFiniteLoss, match=r"iteration 1: non-finite loss in poison"):
        trainer.train()
    assert checkpoint.read(tmp_path / "last.pt")["iteration"] == 1


def test_nan_loss_can_skip_the_step(tiny):
    recipe = tiny({"optim": {"iters": 3}, "run": {"on_nonfinite": "skip"},
                   "plugins": {"nan": {"use": "recorder:NaNAt", "at": 1}}})
    trainer = Trainer(build_run(recipe))
    trainer.train()
    assert trainer.skipped_steps == 1 and trainer.run.iteration == 3
    assert all(torch.isfinite(p).all() for p in trainer.run.student.parameters())



def peer_rank_trainer(monkeypatch, tiny, peer_flags):
    """A trainer in a simulated 2-rank group whose peer all-reduces ``peer_flags`` (non-finite,
    stop) from iteration 1 on; returns it and the list of what this rank put into each all-reduce."""
    trainer = Trainer(build_run(tiny({"optim": {"iters": 3}, "eval": {"every": 3},
                                      "run": {"on_nonfinite": "skip"}})))
    reduced = []

    def all_reduce(tensor):
        reduced.append(tensor.tolist())
        if trainer.run.iteration >= 1:
            tensor.add_(torch.tensor(peer_flags))

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    return trainer, reduced


def test_a_stop_signal_on_a_peer_rank_stops_this_one_with_one_all_reduce_a_step(monkeypatch, tiny):
    trainer, reduced = peer_rank_trainer(monkeypatch, tiny, (0.0, 1.0))
    with pytest.raises(Stopped, match="stopped at iteration 2"):
        trainer.train()
    assert reduced == [[0.0, 0.0], [0.0, 0.0]]  # (non-finite, stop) of steps 0 and 1


def test_a_non_finite_loss_on_a_peer_rank_skips_the_step_here_too(monkeypatch, tiny):
    trainer, reduced = peer_rank_trainer(monkeypatch, tiny, (1.0, 0.0))
    batches = trainer.batches()
    logs = []
    for _ in range(3):
        logs.append(trainer.step(*next(batches)))
        trainer.run.iteration += 1
    assert ["skipped" in entry for entry in logs] == [False, True, True]
    assert reduced == [[0.0, 0.0]] * 3 and not trainer.stop_agreed
